#include "tokenizer/jinja/interpreter.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/parser.h"

namespace paft::tokenizer::jinja {
namespace {

enum class Flow { kNormal, kBreak, kContinue };

absl::Status ErrorAt(int line, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("template line ", line, ": ", what));
}

// Python's < on numbers, strings and lists.
absl::StatusOr<bool> Less(const Value& a, const Value& b, int line) {
  if (a.is_number() && b.is_number()) return a.number() < b.number();
  if (a.is_string() && b.is_string()) return a.string() < b.string();
  if (a.is_list() && b.is_list()) {
    const size_t n = std::min(a.list().size(), b.list().size());
    for (size_t i = 0; i < n; ++i) {
      if (Equal(a.list()[i], b.list()[i])) continue;
      return Less(a.list()[i], b.list()[i], line);
    }
    return a.list().size() < b.list().size();
  }
  return ErrorAt(line, absl::StrCat("cannot compare a ", a.TypeName(), " with a ", b.TypeName()));
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

class Interpreter {
 public:
  explicit Interpreter(const Value& context) {
    frames_.emplace_back();
    const Value globals = Globals();
    for (const auto& [k, v] : globals.dict()) frames_.back()[k] = v;
    for (const auto& [k, v] : context.dict()) frames_.back()[k] = v;
  }

  absl::Status Execute(const Body& body, std::string* out, Flow* flow) {
    for (const auto& stmt : body) {
      PAFT_RETURN_IF_ERROR(ExecuteOne(*stmt, out, flow));
      if (*flow != Flow::kNormal) return absl::OkStatus();
    }
    return absl::OkStatus();
  }

 private:
  Value Lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value();
  }

  absl::Status Assign(const std::vector<std::string>& targets, const Value& value, int line) {
    if (targets.size() == 1) {
      frames_.back()[targets[0]] = value;
      return absl::OkStatus();
    }
    if (!value.is_list() || value.list().size() != targets.size()) {
      return ErrorAt(line, absl::StrCat("cannot unpack a ", value.TypeName(), " into ",
                                        targets.size(), " names"));
    }
    for (size_t i = 0; i < targets.size(); ++i) frames_.back()[targets[i]] = value.list()[i];
    return absl::OkStatus();
  }

  absl::Status ExecuteOne(const Stmt& s, std::string* out, Flow* flow) {
    switch (s.kind) {
      case Stmt::Kind::kText:
        *out += s.text;
        return absl::OkStatus();
      case Stmt::Kind::kOutput: {
        PAFT_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
        *out += v.Str();
        return absl::OkStatus();
      }
      case Stmt::Kind::kIf:
        for (size_t i = 0; i < s.conditions.size(); ++i) {
          PAFT_ASSIGN_OR_RETURN(Value c, Eval(*s.conditions[i]));
          if (c.Truthy()) return Execute(s.bodies[i], out, flow);
        }
        if (s.bodies.size() > s.conditions.size()) return Execute(s.bodies.back(), out, flow);
        return absl::OkStatus();
      case Stmt::Kind::kFor:
        return ExecuteFor(s, out);
      case Stmt::Kind::kSet: {
        PAFT_ASSIGN_OR_RETURN(Value v, Eval(*s.expr));
        if (!s.attribute.empty()) {
          Value ns = Lookup(s.text);
          if (!ns.is_namespace()) {
            return ErrorAt(s.line, absl::StrCat("'", s.text, "' is not a namespace: cannot set '",
                                                s.attribute, "'"));
          }
          ns.Set(s.attribute, v);
          return absl::OkStatus();
        }
        return Assign(s.targets, v, s.line);
      }
      case Stmt::Kind::kSetBlock: {
        std::string captured;
        Flow inner = Flow::kNormal;
        PAFT_RETURN_IF_ERROR(Execute(s.bodies[0], &captured, &inner));
        frames_.back()[s.targets[0]] = Value::String(captured);
        return absl::OkStatus();
      }
      case Stmt::Kind::kBreak:
      case Stmt::Kind::kContinue:
        if (loop_depth_ == 0) return ErrorAt(s.line, "break/continue outside a loop");
        *flow = s.kind == Stmt::Kind::kBreak ? Flow::kBreak : Flow::kContinue;
        return absl::OkStatus();
      case Stmt::Kind::kGeneration:
        return Execute(s.bodies[0], out, flow);
      case Stmt::Kind::kMacro:
        frames_.back()[s.text] = MakeMacro(s);
        return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  Value MakeMacro(const Stmt& s) {
    return Value::MakeFunction([this, &s](const CallArgs& args) -> absl::StatusOr<Value> {
      std::map<std::string, Value> frame;
      for (size_t i = 0; i < s.targets.size(); ++i) {
        Value v = args.Arg(i, s.targets[i]);
        if (v.is_undefined() && s.conditions[i] != nullptr) {
          PAFT_ASSIGN_OR_RETURN(v, Eval(*s.conditions[i]));
        }
        frame[s.targets[i]] = v;
      }
      frames_.push_back(std::move(frame));
      std::string rendered;
      Flow flow = Flow::kNormal;
      absl::Status status = Execute(s.bodies[0], &rendered, &flow);
      frames_.pop_back();
      if (!status.ok()) return status;
      return Value::String(rendered);
    });
  }

  absl::Status ExecuteFor(const Stmt& s, std::string* out) {
    PAFT_ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr));
    std::vector<Value> items;
    if (iterable.is_list()) {
      items = iterable.list();
    } else if (iterable.is_dict()) {
      for (const auto& [k, v] : iterable.dict()) items.push_back(Value::String(k));
    } else if (iterable.is_string()) {
      for (const std::string& c : CodePoints(iterable.string())) items.push_back(Value::String(c));
    } else if (!iterable.is_undefined() && !iterable.is_none()) {
      return ErrorAt(s.line, absl::StrCat("a ", iterable.TypeName(), " is not iterable"));
    }
    frames_.emplace_back();  // the loop's scope: its sets do not leak out
    if (s.filter != nullptr) {
      std::vector<Value> kept;
      for (const Value& item : items) {
        PAFT_RETURN_IF_ERROR(Assign(s.targets, item, s.line));
        PAFT_ASSIGN_OR_RETURN(Value keep, Eval(*s.filter));
        if (keep.Truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    ++loop_depth_;
    absl::Status status = absl::OkStatus();
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n && status.ok(); ++i) {
      frames_.back().clear();
      Value loop = Value::MakeDict({{"index", Value::Int(i + 1)},
                                    {"index0", Value::Int(i)},
                                    {"revindex", Value::Int(n - i)},
                                    {"revindex0", Value::Int(n - i - 1)},
                                    {"first", Value::Bool(i == 0)},
                                    {"last", Value::Bool(i == n - 1)},
                                    {"length", Value::Int(n)},
                                    {"depth", Value::Int(loop_depth_)},
                                    {"depth0", Value::Int(loop_depth_ - 1)}});
      if (i > 0) loop.Set("previtem", items[i - 1]);
      if (i + 1 < n) loop.Set("nextitem", items[i + 1]);
      loop.Set("cycle", Value::MakeFunction([i](const CallArgs& args) -> absl::StatusOr<Value> {
        if (args.positional.empty()) return absl::InvalidArgumentError("loop.cycle needs values");
        return args.positional[static_cast<size_t>(i) % args.positional.size()];
      }));
      frames_.back()["loop"] = loop;
      status = Assign(s.targets, items[i], s.line);
      if (!status.ok()) break;
      Flow flow = Flow::kNormal;
      status = Execute(s.bodies[0], out, &flow);
      if (flow == Flow::kBreak) break;
    }
    --loop_depth_;
    frames_.pop_back();
    PAFT_RETURN_IF_ERROR(status);
    if (n == 0 && s.bodies.size() > 1) {
      Flow flow = Flow::kNormal;
      return Execute(s.bodies[1], out, &flow);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<CallArgs> Arguments(const Expr& e, size_t first) {
    CallArgs args;
    for (size_t i = first; i < e.items.size(); ++i) {
      PAFT_ASSIGN_OR_RETURN(Value v, Eval(*e.items[i]));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [k, expr] : e.keywords) {
      PAFT_ASSIGN_OR_RETURN(Value v, Eval(*expr));
      args.keyword.emplace_back(k, std::move(v));
    }
    return args;
  }

  absl::StatusOr<Value> Eval(const Expr& e) {
    auto annotate = [&](const absl::Status& s) {
      return absl::StartsWith(s.message(), "template line ")
                 ? s
                 : ErrorAt(e.line, std::string(s.message()));
    };
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.value;
      case Expr::Kind::kName:
        return Lookup(e.name);
      case Expr::Kind::kList: {
        List items;
        for (const auto& item : e.items) {
          PAFT_ASSIGN_OR_RETURN(Value v, Eval(*item));
          items.push_back(std::move(v));
        }
        return Value::MakeList(std::move(items));
      }
      case Expr::Kind::kDict: {
        Dict items;
        for (size_t i = 0; i + 1 < e.items.size(); i += 2) {
          PAFT_ASSIGN_OR_RETURN(Value k, Eval(*e.items[i]));
          PAFT_ASSIGN_OR_RETURN(Value v, Eval(*e.items[i + 1]));
          if (!k.is_string()) return ErrorAt(e.line, "dict keys must be strings");
          items.emplace_back(k.string(), std::move(v));
        }
        return Value::MakeDict(std::move(items));
      }
      case Expr::Kind::kAttr: {
        PAFT_ASSIGN_OR_RETURN(Value object, Eval(*e.items[0]));
        if (object.is_undefined()) {
          return ErrorAt(e.line, absl::StrCat("cannot read '", e.name, "' of an undefined value"));
        }
        auto v = GetAttribute(object, e.name);
        if (!v.ok()) return annotate(v.status());
        return v;
      }
      case Expr::Kind::kItem: {
        PAFT_ASSIGN_OR_RETURN(Value object, Eval(*e.items[0]));
        PAFT_ASSIGN_OR_RETURN(Value key, Eval(*e.items[1]));
        if (object.is_undefined()) {
          return ErrorAt(e.line, absl::StrCat("cannot index an undefined value with ", key.Repr()));
        }
        return GetItem(object, key);
      }
      case Expr::Kind::kSlice:
        return EvalSlice(e);
      case Expr::Kind::kCall: {
        PAFT_ASSIGN_OR_RETURN(Value callee, Eval(*e.items[0]));
        if (callee.kind() != Value::Kind::kFunction) {
          if (callee.is_undefined() && e.items[0]->kind == Expr::Kind::kAttr) {
            return ErrorAt(e.line, absl::StrCat("method '", e.items[0]->name,
                                                "' is not supported (or is undefined)"));
          }
          return ErrorAt(e.line, absl::StrCat("a ", callee.TypeName(), " is not callable"));
        }
        PAFT_ASSIGN_OR_RETURN(CallArgs args, Arguments(e, 1));
        auto v = callee.function()(args);
        if (!v.ok()) return annotate(v.status());
        return v;
      }
      case Expr::Kind::kFilter: {
        PAFT_ASSIGN_OR_RETURN(Value value, Eval(*e.items[0]));
        PAFT_ASSIGN_OR_RETURN(CallArgs args, Arguments(e, 1));
        auto v = ApplyFilter(e.name, value, args);
        if (!v.ok()) return annotate(v.status());
        return v;
      }
      case Expr::Kind::kTest: {
        PAFT_ASSIGN_OR_RETURN(Value value, Eval(*e.items[0]));
        PAFT_ASSIGN_OR_RETURN(CallArgs args, Arguments(e, 1));
        auto v = ApplyTest(e.name, value, args);
        if (!v.ok()) return annotate(v.status());
        return Value::Bool(*v != e.negated);
      }
      case Expr::Kind::kNot: {
        PAFT_ASSIGN_OR_RETURN(Value v, Eval(*e.items[0]));
        return Value::Bool(!v.Truthy());
      }
      case Expr::Kind::kNegate:
      case Expr::Kind::kPlus: {
        PAFT_ASSIGN_OR_RETURN(Value v, Eval(*e.items[0]));
        if (!v.is_number()) return ErrorAt(e.line, absl::StrCat("bad operand for unary -: ", v.TypeName()));
        if (e.kind == Expr::Kind::kPlus) return v;
        return v.kind() == Value::Kind::kInt ? Value::Int(-v.integer()) : Value::Float(-v.number());
      }
      case Expr::Kind::kAnd: {
        PAFT_ASSIGN_OR_RETURN(Value left, Eval(*e.items[0]));
        if (!left.Truthy()) return left;
        return Eval(*e.items[1]);
      }
      case Expr::Kind::kOr: {
        PAFT_ASSIGN_OR_RETURN(Value left, Eval(*e.items[0]));
        if (left.Truthy()) return left;
        return Eval(*e.items[1]);
      }
      case Expr::Kind::kConditional: {
        PAFT_ASSIGN_OR_RETURN(Value c, Eval(*e.items[0]));
        if (c.Truthy()) return Eval(*e.items[1]);
        if (e.items[2] == nullptr) return Value();
        return Eval(*e.items[2]);
      }
      case Expr::Kind::kBinary: {
        PAFT_ASSIGN_OR_RETURN(Value a, Eval(*e.items[0]));
        PAFT_ASSIGN_OR_RETURN(Value b, Eval(*e.items[1]));
        return Binary(e.name, a, b, e.line);
      }
    }
    return Value();
  }

  absl::StatusOr<Value> EvalSlice(const Expr& e) {
    PAFT_ASSIGN_OR_RETURN(Value object, Eval(*e.items[0]));
    int64_t bounds[3] = {0, 0, 1};
    bool given[3] = {false, false, false};
    for (int i = 0; i < 3; ++i) {
      if (e.items[i + 1] == nullptr) continue;
      PAFT_ASSIGN_OR_RETURN(Value v, Eval(*e.items[i + 1]));
      if (v.is_none()) continue;
      if (v.kind() != Value::Kind::kInt) return ErrorAt(e.line, "slice bounds must be integers");
      bounds[i] = v.integer();
      given[i] = true;
    }
    const int64_t step = bounds[2];
    if (step == 0) return ErrorAt(e.line, "slice step cannot be zero");
    std::vector<Value> items;
    std::vector<std::string> chars;
    if (object.is_list()) {
      items = object.list();
    } else if (object.is_string()) {
      chars = CodePoints(object.string());
    } else {
      return ErrorAt(e.line, absl::StrCat("a ", object.TypeName(), " cannot be sliced"));
    }
    const int64_t n = object.is_list() ? static_cast<int64_t>(items.size()) : static_cast<int64_t>(chars.size());
    // Python's slice.indices().
    auto clamp = [&](int64_t v, bool is_given, int64_t fallback) {
      if (!is_given) return fallback;
      if (v < 0) v += n;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    const int64_t start = clamp(bounds[0], given[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(bounds[1], given[1], step > 0 ? n : -1);
    List out_items;
    std::string out_string;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (object.is_list()) {
        out_items.push_back(items[i]);
      } else {
        out_string += chars[i];
      }
    }
    if (object.is_list()) return Value::MakeList(std::move(out_items));
    return Value::String(std::move(out_string));
  }

  absl::StatusOr<Value> Binary(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "==") return Value::Bool(Equal(a, b));
    if (op == "!=") return Value::Bool(!Equal(a, b));
    if (op == "<" || op == ">=") {
      PAFT_ASSIGN_OR_RETURN(bool less, Less(a, b, line));
      return Value::Bool(less == (op == "<"));
    }
    if (op == ">" || op == "<=") {
      PAFT_ASSIGN_OR_RETURN(bool greater, Less(b, a, line));
      return Value::Bool(greater == (op == ">"));
    }
    if (op == "in" || op == "not in") {
      PAFT_ASSIGN_OR_RETURN(bool found, ApplyTest("in", a, CallArgs{{b}, {}}));
      return Value::Bool(found == (op == "in"));
    }
    if (op == "~") return Value::String(a.Str() + b.Str());
    if (a.is_undefined() || b.is_undefined()) {
      return ErrorAt(line, absl::StrCat("an undefined value in '", op, "'"));
    }
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value::String(a.string() + b.string());
      if (a.is_list() && b.is_list()) {
        List items = a.list();
        items.insert(items.end(), b.list().begin(), b.list().end());
        return Value::MakeList(std::move(items));
      }
    }
    if (op == "*" && (a.is_string() || b.is_string()) && (a.kind() == Value::Kind::kInt || b.kind() == Value::Kind::kInt)) {
      const std::string& s = a.is_string() ? a.string() : b.string();
      std::string out;
      for (int64_t i = 0; i < (a.is_string() ? b.integer() : a.integer()); ++i) out += s;
      return Value::String(out);
    }
    if (op == "%" && a.is_string()) return ErrorAt(line, "'%' string formatting is not supported");
    auto numeric = [](const Value& v) { return v.is_number() || v.kind() == Value::Kind::kBool; };
    if (!numeric(a) || !numeric(b)) {
      return ErrorAt(line, absl::StrCat("unsupported operand types for ", op, ": ", a.TypeName(),
                                        " and ", b.TypeName()));
    }
    auto as_int = [](const Value& v) { return v.kind() == Value::Kind::kBool ? int64_t{v.boolean()} : v.integer(); };
    const bool ints = a.kind() != Value::Kind::kFloat && b.kind() != Value::Kind::kFloat;
    const double x = a.kind() == Value::Kind::kBool ? a.boolean() : a.number();
    const double y = b.kind() == Value::Kind::kBool ? b.boolean() : b.number();
    if (op == "+") return ints ? Value::Int(as_int(a) + as_int(b)) : Value::Float(x + y);
    if (op == "-") return ints ? Value::Int(as_int(a) - as_int(b)) : Value::Float(x - y);
    if (op == "*") return ints ? Value::Int(as_int(a) * as_int(b)) : Value::Float(x * y);
    if (op == "/") {
      if (y == 0) return ErrorAt(line, "division by zero");
      return Value::Float(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) return ErrorAt(line, "division by zero");
      if (ints) {
        const int64_t q = FloorDiv(as_int(a), as_int(b));
        return op == "//" ? Value::Int(q) : Value::Int(as_int(a) - q * as_int(b));
      }
      const double q = std::floor(x / y);
      return op == "//" ? Value::Float(q) : Value::Float(x - q * y);
    }
    if (op == "**") {
      if (ints && as_int(b) >= 0) {
        int64_t r = 1;
        for (int64_t i = 0; i < as_int(b); ++i) r *= as_int(a);
        return Value::Int(r);
      }
      return Value::Float(std::pow(x, y));
    }
    return ErrorAt(line, absl::StrCat("operator '", op, "' is not supported"));
  }

  std::vector<std::map<std::string, Value>> frames_;
  int loop_depth_ = 0;
};

}  // namespace

absl::StatusOr<Template> Template::Parse(const std::string& source) {
  PAFT_ASSIGN_OR_RETURN(Body body, jinja::Parse(source));
  Template t;
  t.body_ = std::make_shared<const Body>(std::move(body));
  return t;
}

absl::StatusOr<std::string> Template::Render(const nlohmann::ordered_json& context) const {
  if (!context.is_object()) return absl::InvalidArgumentError("the template context must be an object");
  Interpreter interpreter(Value::FromJson(context));
  std::string out;
  Flow flow = Flow::kNormal;
  PAFT_RETURN_IF_ERROR(interpreter.Execute(*body_, &out, &flow));
  return out;
}

}  // namespace paft::tokenizer::jinja
