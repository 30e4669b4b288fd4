#include "tokenizer/jinja/parser.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/jinja/lexer.h"

namespace paft::tokenizer::jinja {
namespace {

using K = Token::Kind;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : t_(std::move(tokens)) {}

  // Statements until one of `ends` (block names) or the end; *end_tag gets the one found.
  absl::StatusOr<Body> ParseBody(const std::vector<std::string>& ends, std::string* end_tag) {
    Body body;
    while (true) {
      const Token& tok = t_[pos_];
      if (tok.kind == K::kEnd) {
        if (!ends.empty()) return Error(absl::StrCat("missing {% ", ends.back(), " %}"));
        return body;
      }
      if (tok.kind == K::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->text = tok.text;
        s->line = tok.line;
        body.push_back(std::move(s));
        ++pos_;
        continue;
      }
      if (tok.kind == K::kExprOpen) {
        ++pos_;
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->line = tok.line;
        PAFT_ASSIGN_OR_RETURN(s->expr, ParseExpression());
        PAFT_RETURN_IF_ERROR(Expect(K::kExprClose, "}}"));
        body.push_back(std::move(s));
        continue;
      }
      // {% name ... %}
      ++pos_;
      if (Peek().kind != K::kName) return Error("expected a statement name after {%");
      const std::string name = Peek().text;
      for (const std::string& end : ends) {
        if (name == end) {
          ++pos_;
          *end_tag = name;
          return body;
        }
      }
      PAFT_ASSIGN_OR_RETURN(auto stmt, ParseStatement(name));
      body.push_back(std::move(stmt));
    }
  }

 private:
  const Token& Peek(size_t ahead = 0) const { return t_[std::min(pos_ + ahead, t_.size() - 1)]; }
  bool IsOp(const std::string& op) const { return Peek().kind == K::kOperator && Peek().text == op; }
  bool IsName(const std::string& name, size_t ahead = 0) const {
    return Peek(ahead).kind == K::kName && Peek(ahead).text == name;
  }
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat("template line ", Peek().line, ": ", what));
  }
  absl::Status Expect(K kind, const std::string& what) {
    if (Peek().kind != kind || (kind == K::kOperator && Peek().text != what)) {
      return Error(absl::StrCat("expected '", what, "'"));
    }
    ++pos_;
    return absl::OkStatus();
  }
  absl::Status ExpectName(const std::string& name) {
    if (!IsName(name)) return Error(absl::StrCat("expected '", name, "'"));
    ++pos_;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> Identifier() {
    if (Peek().kind != K::kName) return Error("expected a name");
    return t_[pos_++].text;
  }

  absl::StatusOr<std::unique_ptr<Stmt>> ParseStatement(const std::string& name) {
    auto s = std::make_unique<Stmt>();
    s->line = Peek().line;
    ++pos_;  // the statement name
    std::string end;
    if (name == "if") {
      s->kind = Stmt::Kind::kIf;
      PAFT_ASSIGN_OR_RETURN(auto condition, ParseExpression());
      s->conditions.push_back(std::move(condition));
      PAFT_RETURN_IF_ERROR(Expect(K::kBlockClose, "%}"));
      while (true) {
        PAFT_ASSIGN_OR_RETURN(Body body, ParseBody({"elif", "else", "endif"}, &end));
        s->bodies.push_back(std::move(body));
        if (end == "elif") {
          PAFT_ASSIGN_OR_RETURN(auto c, ParseExpression());
          s->conditions.push_back(std::move(c));
          PAFT_RETURN_IF_ERROR(Expect(K::kBlockClose, "%}"));
        } else if (end == "else") {
          PAFT_RETURN_IF_ERROR(Expect(K::kBlockClose, "%}"));
          PAFT_ASSIGN_OR_RETURN(Body body2, ParseBody({"endif"}, &end));
          s->bodies.push_back(std::move(body2));
          break;
        } else {
          break;
        }
      }
    } else if (name == "for") {
      s->kind = Stmt::Kind::kFor;
      PAFT_ASSIGN_OR_RETURN(s->targets, Targets());
      PAFT_RETURN_IF_ERROR(ExpectName("in"));
      PAFT_ASSIGN_OR_RETURN(s->expr, ParseOr());  // `if` after it is the loop filter
      if (IsName("if")) {
        ++pos_;
        PAFT_ASSIGN_OR_RETURN(s->filter, ParseOr());
      }
      if (IsName("recursive")) return Error("recursive loops are not supported");
      PAFT_RETURN_IF_ERROR(Expect(K::kBlockClose, "%}"));
      PAFT_ASSIGN_OR_RETURN(Body body, ParseBody({"else", "endfor"}, &end));
      s->bodies.push_back(std::move(body));
      if (end == "else") {
        PAFT_RETURN_IF_ERROR(Expect(K::kBlockClose, "%}"));
        PAFT_ASSIGN_OR_RETURN(Body otherwise, ParseBody({"endfor"}, &end));
        s->bodies.push_back(std::move(otherwise));
      }
    } else if (name == "set") {
      if (Peek().kind == K::kName && Peek(1).kind == K::kOperator && Peek(1).text == "." ) {
        s->kind = Stmt::Kind::kSet;
        s->text = t_[pos_].text;
        pos_ += 2;
        PAFT_ASSIGN_OR_RETURN(s->attribute, Identifier());
      } else {
        PAFT_ASSIGN_OR_RETURN(s->targets, Targets());
        s->kind = IsOp("=") ? Stmt::Kind::kSet : Stmt::Kind::kSetBlock;
      }
      if (s->kind == Stmt::Kind::kSet) {
        PAFT_RETURN_IF_ERROR(Expect(K::kOperator, "="));
        PAFT_ASSIGN_OR_RETURN(s->expr, ParseTuple());
        PAFT_RETURN_IF_ERROR(Expect(K::kBlockClose, "%}"));
        return s;
      }
      if (s->targets.size() != 1) return Error("a set block assigns one name");
      PAFT_RETURN_IF_ERROR(Expect(K::kBlockClose, "%}"));
      PAFT_ASSIGN_OR_RETURN(Body body, ParseBody({"endset"}, &end));
      s->bodies.push_back(std::move(body));
    } else if (name == "macro") {
      s->kind = Stmt::Kind::kMacro;
      PAFT_ASSIGN_OR_RETURN(s->text, Identifier());
      PAFT_RETURN_IF_ERROR(Expect(K::kOperator, "("));
      while (!IsOp(")")) {
        PAFT_ASSIGN_OR_RETURN(std::string param, Identifier());
        s->targets.push_back(param);
        ExprPtr fallback;
        if (IsOp("=")) {
          ++pos_;
          PAFT_ASSIGN_OR_RETURN(fallback, ParseExpression());
        }
        s->conditions.push_back(std::move(fallback));
        if (!IsOp(",")) break;
        ++pos_;
      }
      PAFT_RETURN_IF_ERROR(Expect(K::kOperator, ")"));
      PAFT_RETURN_IF_ERROR(Expect(K::kBlockClose, "%}"));
      PAFT_ASSIGN_OR_RETURN(Body body, ParseBody({"endmacro"}, &end));
      s->bodies.push_back(std::move(body));
    } else if (name == "break" || name == "continue") {
      s->kind = name == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
    } else if (name == "generation") {
      s->kind = Stmt::Kind::kGeneration;
      PAFT_RETURN_IF_ERROR(Expect(K::kBlockClose, "%}"));
      PAFT_ASSIGN_OR_RETURN(Body body, ParseBody({"endgeneration"}, &end));
      s->bodies.push_back(std::move(body));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "template line ", s->line, ": statement '", name, "' is not supported"));
    }
    PAFT_RETURN_IF_ERROR(Expect(K::kBlockClose, "%}"));
    return s;
  }

  absl::StatusOr<std::vector<std::string>> Targets() {
    std::vector<std::string> names;
    const bool parenthesized = IsOp("(");
    if (parenthesized) ++pos_;
    while (true) {
      PAFT_ASSIGN_OR_RETURN(std::string n, Identifier());
      names.push_back(n);
      if (!IsOp(",")) break;
      ++pos_;
    }
    if (parenthesized) PAFT_RETURN_IF_ERROR(Expect(K::kOperator, ")"));
    return names;
  }

  ExprPtr Make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // a, b, c (an unparenthesized tuple, in `set`).
  absl::StatusOr<ExprPtr> ParseTuple() {
    const int line = Peek().line;
    PAFT_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression());
    if (!IsOp(",")) return first;
    ExprPtr list = Make(Expr::Kind::kList, line);
    list->items.push_back(std::move(first));
    while (IsOp(",")) {
      ++pos_;
      PAFT_ASSIGN_OR_RETURN(ExprPtr next, ParseExpression());
      list->items.push_back(std::move(next));
    }
    return list;
  }

  absl::StatusOr<ExprPtr> ParseExpression() {
    const int line = Peek().line;
    PAFT_ASSIGN_OR_RETURN(ExprPtr value, ParseOr());
    if (!IsName("if")) return value;
    ++pos_;
    ExprPtr e = Make(Expr::Kind::kConditional, line);
    PAFT_ASSIGN_OR_RETURN(ExprPtr condition, ParseOr());
    ExprPtr otherwise;
    if (IsName("else")) {
      ++pos_;
      PAFT_ASSIGN_OR_RETURN(otherwise, ParseExpression());
    }
    e->items.push_back(std::move(condition));
    e->items.push_back(std::move(value));
    e->items.push_back(std::move(otherwise));
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    PAFT_ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      ExprPtr e = Make(Expr::Kind::kOr, t_[pos_++].line);
      PAFT_ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      e->items.push_back(std::move(left));
      e->items.push_back(std::move(right));
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    PAFT_ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      ExprPtr e = Make(Expr::Kind::kAnd, t_[pos_++].line);
      PAFT_ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      e->items.push_back(std::move(left));
      e->items.push_back(std::move(right));
      left = std::move(e);
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      ExprPtr e = Make(Expr::Kind::kNot, t_[pos_++].line);
      PAFT_ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      e->items.push_back(std::move(operand));
      return e;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    PAFT_ASSIGN_OR_RETURN(ExprPtr left, ParseMath1());
    while (true) {
      std::string op;
      if (Peek().kind == K::kOperator &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" ||
           Peek().text == ">" || Peek().text == "<=" || Peek().text == ">=")) {
        op = t_[pos_++].text;
      } else if (IsName("in")) {
        op = "in";
        ++pos_;
      } else if (IsName("not") && IsName("in", 1)) {
        op = "not in";
        pos_ += 2;
      } else {
        return left;
      }
      ExprPtr e = Make(Expr::Kind::kBinary, Peek().line);
      e->name = op;
      PAFT_ASSIGN_OR_RETURN(ExprPtr right, ParseMath1());
      e->items.push_back(std::move(left));
      e->items.push_back(std::move(right));
      left = std::move(e);
    }
  }

  // Binary levels: + - ; ~ ; * / // % ; **
  absl::StatusOr<ExprPtr> ParseBinaryLevel(int level) {
    static const std::vector<std::vector<std::string>> kLevels = {
        {"+", "-"}, {"~"}, {"*", "/", "//", "%"}, {"**"}};
    if (level == static_cast<int>(kLevels.size())) return ParseUnary();
    PAFT_ASSIGN_OR_RETURN(ExprPtr left, ParseBinaryLevel(level + 1));
    while (Peek().kind == K::kOperator) {
      const auto& ops = kLevels[level];
      if (std::find(ops.begin(), ops.end(), Peek().text) == ops.end()) break;
      ExprPtr e = Make(Expr::Kind::kBinary, Peek().line);
      e->name = t_[pos_++].text;
      PAFT_ASSIGN_OR_RETURN(ExprPtr right, ParseBinaryLevel(level + 1));
      e->items.push_back(std::move(left));
      e->items.push_back(std::move(right));
      left = std::move(e);
    }
    return left;
  }
  absl::StatusOr<ExprPtr> ParseMath1() { return ParseBinaryLevel(0); }

  // As Jinja: the operand of a sign takes no filters; filters after it apply to the signed value
  // (-3|abs is 3).
  absl::StatusOr<ExprPtr> ParseUnary(bool with_filters = true) {
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      const Expr::Kind kind = IsOp("-") ? Expr::Kind::kNegate : Expr::Kind::kPlus;
      e = Make(kind, t_[pos_++].line);
      PAFT_ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(/*with_filters=*/false));
      e->items.push_back(std::move(operand));
    } else {
      PAFT_ASSIGN_OR_RETURN(ExprPtr primary, ParsePrimary());
      PAFT_ASSIGN_OR_RETURN(e, ParsePostfix(std::move(primary)));
    }
    if (!with_filters) return e;
    return ParseFilters(std::move(e));
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& tok = Peek();
    const int line = tok.line;
    if (tok.kind == K::kString) {
      std::string s;
      while (Peek().kind == K::kString) s += t_[pos_++].text;  // adjacent strings concatenate
      ExprPtr e = Make(Expr::Kind::kLiteral, line);
      e->value = Value::String(std::move(s));
      return e;
    }
    if (tok.kind == K::kInt || tok.kind == K::kFloat) {
      ExprPtr e = Make(Expr::Kind::kLiteral, line);
      e->value = tok.kind == K::kInt ? Value::Int(std::strtoll(tok.text.c_str(), nullptr, 10))
                                     : Value::Float(std::strtod(tok.text.c_str(), nullptr));
      ++pos_;
      return e;
    }
    if (tok.kind == K::kName) {
      ++pos_;
      ExprPtr e = Make(Expr::Kind::kLiteral, line);
      if (tok.text == "true" || tok.text == "True") return (e->value = Value::Bool(true), std::move(e));
      if (tok.text == "false" || tok.text == "False") return (e->value = Value::Bool(false), std::move(e));
      if (tok.text == "none" || tok.text == "None") return (e->value = Value::None(), std::move(e));
      e->kind = Expr::Kind::kName;
      e->name = tok.text;
      return e;
    }
    if (IsOp("(")) {
      ++pos_;
      if (IsOp(")")) {
        ++pos_;
        return Make(Expr::Kind::kList, line);
      }
      PAFT_ASSIGN_OR_RETURN(ExprPtr first, ParseExpression());
      if (IsOp(")")) {
        ++pos_;
        return first;
      }
      ExprPtr tuple = Make(Expr::Kind::kList, line);
      tuple->items.push_back(std::move(first));
      while (IsOp(",")) {
        ++pos_;
        if (IsOp(")")) break;
        PAFT_ASSIGN_OR_RETURN(ExprPtr next, ParseExpression());
        tuple->items.push_back(std::move(next));
      }
      PAFT_RETURN_IF_ERROR(Expect(K::kOperator, ")"));
      return tuple;
    }
    if (IsOp("[")) {
      ++pos_;
      ExprPtr list = Make(Expr::Kind::kList, line);
      while (!IsOp("]")) {
        PAFT_ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
        list->items.push_back(std::move(item));
        if (!IsOp(",")) break;
        ++pos_;
      }
      PAFT_RETURN_IF_ERROR(Expect(K::kOperator, "]"));
      return list;
    }
    if (IsOp("{")) {
      ++pos_;
      ExprPtr dict = Make(Expr::Kind::kDict, line);
      while (!IsOp("}")) {
        PAFT_ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
        PAFT_RETURN_IF_ERROR(Expect(K::kOperator, ":"));
        PAFT_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        dict->items.push_back(std::move(key));
        dict->items.push_back(std::move(value));
        if (!IsOp(",")) break;
        ++pos_;
      }
      PAFT_RETURN_IF_ERROR(Expect(K::kOperator, "}"));
      return dict;
    }
    return Error(absl::StrCat("unexpected '", tok.text, "' in an expression"));
  }

  absl::Status ParseCallArguments(Expr* e) {
    PAFT_RETURN_IF_ERROR(Expect(K::kOperator, "("));
    while (!IsOp(")")) {
      if (Peek().kind == K::kName && Peek(1).kind == K::kOperator && Peek(1).text == "=") {
        std::string key = t_[pos_].text;
        pos_ += 2;
        PAFT_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        e->keywords.emplace_back(std::move(key), std::move(value));
      } else {
        if (IsOp("*")) return Error("*args in calls are not supported");
        PAFT_ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
        e->items.push_back(std::move(value));
      }
      if (!IsOp(",")) break;
      ++pos_;
    }
    return Expect(K::kOperator, ")");
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr e) {
    while (true) {
      const int line = Peek().line;
      if (IsOp(".")) {
        ++pos_;
        ExprPtr attr = Make(Expr::Kind::kAttr, line);
        if (Peek().kind == K::kInt) {  // x.0 is x[0]
          attr->kind = Expr::Kind::kItem;
          ExprPtr index = Make(Expr::Kind::kLiteral, line);
          index->value = Value::Int(std::strtoll(t_[pos_++].text.c_str(), nullptr, 10));
          attr->items.push_back(std::move(e));
          attr->items.push_back(std::move(index));
        } else {
          PAFT_ASSIGN_OR_RETURN(attr->name, Identifier());
          attr->items.push_back(std::move(e));
        }
        e = std::move(attr);
      } else if (IsOp("[")) {
        ++pos_;
        ExprPtr parts[3];
        bool slice = false;
        for (int part = 0; part < 3; ++part) {
          if (!IsOp(":") && !IsOp("]")) {
            PAFT_ASSIGN_OR_RETURN(parts[part], ParseExpression());
          }
          if (IsOp(":") && part < 2) {
            slice = true;
            ++pos_;
            continue;
          }
          break;
        }
        PAFT_RETURN_IF_ERROR(Expect(K::kOperator, "]"));
        ExprPtr item = Make(slice ? Expr::Kind::kSlice : Expr::Kind::kItem, line);
        item->items.push_back(std::move(e));
        if (slice) {
          for (auto& part : parts) item->items.push_back(std::move(part));
        } else {
          if (!parts[0]) return Error("empty subscript");
          item->items.push_back(std::move(parts[0]));
        }
        e = std::move(item);
      } else if (IsOp("(")) {
        ExprPtr call = Make(Expr::Kind::kCall, line);
        call->items.push_back(std::move(e));
        PAFT_RETURN_IF_ERROR(ParseCallArguments(call.get()));
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilters(ExprPtr e) {
    while (true) {
      const int line = Peek().line;
      if (IsOp("|")) {
        ++pos_;
        ExprPtr filter = Make(Expr::Kind::kFilter, line);
        PAFT_ASSIGN_OR_RETURN(filter->name, Identifier());
        filter->items.push_back(std::move(e));
        if (IsOp("(")) PAFT_RETURN_IF_ERROR(ParseCallArguments(filter.get()));
        e = std::move(filter);
      } else if (IsName("is")) {
        ++pos_;
        ExprPtr test = Make(Expr::Kind::kTest, line);
        if (IsName("not")) {
          test->negated = true;
          ++pos_;
        }
        // Test names may be keywords (none, true, false, in).
        if (Peek().kind != K::kName) return Error("expected a test name after 'is'");
        test->name = t_[pos_++].text;
        test->items.push_back(std::move(e));
        if (IsOp("(")) {
          PAFT_RETURN_IF_ERROR(ParseCallArguments(test.get()));
        } else if (Peek().kind == K::kString || Peek().kind == K::kInt ||
                   Peek().kind == K::kFloat || IsOp("[") || IsOp("{") ||
                   (Peek().kind == K::kName && !IsName("and") && !IsName("or") &&
                    !IsName("if") && !IsName("else") && !IsName("is") && !IsName("in") &&
                    !IsName("not"))) {
          // `is divisibleby 3`, `is in ['a', 'b']`: one argument, as Jinja's parse_test.
          PAFT_ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
          PAFT_ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
          test->items.push_back(std::move(arg));
        }
        e = std::move(test);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<Body> Parse(const std::string& source) {
  PAFT_ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(source));
  Parser parser(std::move(tokens));
  std::string end;
  return parser.ParseBody({}, &end);
}

}  // namespace paft::tokenizer::jinja
