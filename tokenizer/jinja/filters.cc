// The filters of the Jinja interpreter (`value | name(args)`).
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/jinja/builtins.h"

namespace paft::tokenizer::jinja {
namespace {

absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(what); }

}  // namespace

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& value, const CallArgs& args) {
  if (name == "trim") return Value::String(Strip(value.Str(), args.Arg(0, "chars"), true, true));
  if (name == "length" || name == "count") return Length(value);
  if (name == "upper" || name == "lower") return Value::String(MapCase(value.Str(), name == "upper"));
  if (name == "capitalize") return Value::String(Capitalize(value.Str()));
  if (name == "title") return Value::String(Title(value.Str()));
  if (name == "string") return Value::String(value.Str());
  if (name == "safe") return value;
  if (name == "list") return Value::MakeList(Items(value));
  if (name == "first" || name == "last") {
    std::vector<Value> items = Items(value);
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (value.is_string()) {
      std::vector<std::string> cps = CodePoints(value.string());
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
      return Value::String(out);
    }
    std::vector<Value> items = Items(value);
    std::reverse(items.begin(), items.end());
    return Value::MakeList(std::move(items));
  }
  if (name == "default" || name == "d") {
    const bool boolean = args.Arg(1, "boolean", Value::Bool(false)).Truthy();
    if (value.is_undefined() || (boolean && !value.Truthy())) return args.Arg(0, "default_value", Value::String(""));
    return value;
  }
  if (name == "join") {
    const std::string separator = args.Arg(0, "d", Value::String("")).Str();
    const Value attribute = args.Arg(1, "attribute");
    std::string out;
    std::vector<Value> items = Items(value);
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out += separator;
      out += (attribute.is_undefined() ? items[i] : Attribute(items[i], attribute.Str())).Str();
    }
    return Value::String(out);
  }
  if (name == "items") {
    if (!value.is_dict()) return Bad("items: needs a dict");
    return DictMethod(value, "items", {});
  }
  if (name == "replace") return StringMethod(value.Str(), "replace", args);
  if (name == "int") {
    if (value.kind() == Value::Kind::kInt) return value;
    if (value.kind() == Value::Kind::kBool) return Value::Int(value.boolean() ? 1 : 0);
    if (value.kind() == Value::Kind::kFloat) return Value::Int(static_cast<int64_t>(value.number()));
    if (value.is_string()) {
      char* end = nullptr;
      const long long parsed = std::strtoll(value.string().c_str(), &end, 10);
      if (end != value.string().c_str() && *end == '\0') return Value::Int(parsed);
    }
    return args.Arg(0, "default", Value::Int(0));
  }
  if (name == "float") {
    if (value.is_number()) return Value::Float(value.number());
    if (value.kind() == Value::Kind::kBool) return Value::Float(value.boolean() ? 1 : 0);
    if (value.is_string()) {
      char* end = nullptr;
      const double parsed = std::strtod(value.string().c_str(), &end);
      if (end != value.string().c_str() && *end == '\0') return Value::Float(parsed);
    }
    return args.Arg(0, "default", Value::Float(0));
  }
  if (name == "abs") {
    if (value.kind() == Value::Kind::kInt) return Value::Int(std::llabs(value.integer()));
    if (value.is_number()) return Value::Float(std::fabs(value.number()));
    return Bad("abs: needs a number");
  }
  if (name == "tojson") {
    // transformers' tojson: json.dumps(x, ensure_ascii=False, indent=indent, separators, sort_keys).
    const Value indent = args.Arg(1, "indent", args.Arg(0, "indent"));
    const int spaces = indent.kind() == Value::Kind::kInt ? static_cast<int>(indent.integer()) : -1;
    std::string item_sep = spaces >= 0 ? "," : ", ", key_sep = ": ";
    const Value separators = args.Arg(2, "separators");
    if (separators.is_list() && separators.list().size() == 2) {
      item_sep = separators.list()[0].Str();
      key_sep = separators.list()[1].Str();
    }
    if (args.Arg(0, "ensure_ascii", Value::Bool(false)).Truthy() && !args.positional.empty() &&
        args.positional[0].kind() == Value::Kind::kBool) {
      return Bad("tojson: ensure_ascii=True is not supported");
    }
    PAFT_ASSIGN_OR_RETURN(std::string text,
                          value.ToJson(spaces, item_sep, key_sep,
                                       args.Arg(3, "sort_keys", Value::Bool(false)).Truthy()));
    return Value::String(text);
  }
  if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
    const bool by_attribute = name == "selectattr" || name == "rejectattr";
    const bool keep_matching = name == "selectattr" || name == "select";
    const std::string attribute = by_attribute ? args.Arg(0, "attribute").Str() : "";
    const size_t test_index = by_attribute ? 1 : 0;
    CallArgs test_args;
    for (size_t i = test_index + 1; i < args.positional.size(); ++i) test_args.positional.push_back(args.positional[i]);
    List kept;
    for (const Value& item : Items(value)) {
      const Value subject = by_attribute ? Attribute(item, attribute) : item;
      bool match = subject.Truthy();
      if (test_index < args.positional.size()) {
        PAFT_ASSIGN_OR_RETURN(match, ApplyTest(args.positional[test_index].Str(), subject, test_args));
      }
      if (match == keep_matching) kept.push_back(item);
    }
    return Value::MakeList(std::move(kept));
  }
  if (name == "map") {
    const Value attribute = args.Arg(99, "attribute");
    List out;
    for (const Value& item : Items(value)) {
      if (!attribute.is_undefined()) {
        Value v = Attribute(item, attribute.Str());
        out.push_back(v.is_undefined() ? args.Arg(99, "default") : v);
      } else if (!args.positional.empty()) {
        CallArgs rest;
        rest.positional.assign(args.positional.begin() + 1, args.positional.end());
        PAFT_ASSIGN_OR_RETURN(Value v, ApplyFilter(args.positional[0].Str(), item, rest));
        out.push_back(v);
      } else {
        return Bad("map: needs a filter name or attribute=");
      }
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "unique") {  // Jinja's default: strings compared case-insensitively
    const bool case_sensitive = args.Arg(0, "case_sensitive", Value::Bool(false)).Truthy();
    auto key = [&](const Value& v) {
      return !case_sensitive && v.is_string() ? Value::String(MapCase(v.string(), false)) : v;
    };
    List out;
    for (const Value& item : Items(value)) {
      if (std::none_of(out.begin(), out.end(),
                       [&](const Value& seen) { return Equal(key(seen), key(item)); })) {
        out.push_back(item);
      }
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "indent") {
    const int64_t width = args.Arg(0, "width", Value::Int(4)).integer();
    const bool first = args.Arg(1, "first", Value::Bool(false)).Truthy();
    const std::string pad(static_cast<size_t>(std::max<int64_t>(width, 0)), ' ');
    std::string out;
    const std::string s = value.Str();
    size_t pos = 0;
    bool line_start = true;
    bool is_first = true;
    while (pos < s.size()) {
      const size_t nl = s.find('\n', pos);
      const std::string line = s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
      if (line_start && !line.empty() && (!is_first || first)) out += pad;
      out += line;
      if (nl == std::string::npos) break;
      out += '\n';
      pos = nl + 1;
      is_first = false;
    }
    return Value::String(out);
  }
  return Bad(absl::StrCat("filter '", name, "' is not supported"));
}

}  // namespace paft::tokenizer::jinja
