// The syntax tree of a parsed Jinja template (tokenizer/jinja/parser.h builds it,
// tokenizer/jinja/interpreter.h runs it).
#ifndef PAFT_TOKENIZER_JINJA_AST_H_
#define PAFT_TOKENIZER_JINJA_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace paft::tokenizer::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,      // value
    kName,         // name
    kList,         // items (also tuples)
    kDict,         // keys[i]: items[2i], values: items[2i+1]
    kAttr,         // items[0].name
    kItem,         // items[0][items[1]]
    kSlice,        // items[0][items[1]:items[2]:items[3]] (null parts absent)
    kCall,         // items[0](items[1..], keywords)
    kFilter,       // items[0] | name(items[1..], keywords)
    kTest,         // items[0] is [not] name(items[1..])
    kNot, kNegate, kPlus,  // items[0]
    kBinary,       // items[0] op items[1]
    kAnd, kOr,     // short-circuit
    kConditional,  // items[1] if items[0] else items[2] (items[2] may be null)
  };
  Kind kind;
  int line = 0;
  Value value;
  std::string name;  // name, attribute, filter, test or operator
  bool negated = false;
  std::vector<ExprPtr> items;
  std::vector<std::pair<std::string, ExprPtr>> keywords;
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class Kind {
    kText,        // text
    kOutput,      // {{ expr }}
    kIf,          // conditions[i] -> bodies[i]; bodies.back() is else when one longer
    kFor,         // for targets in expr [if filter]: bodies[0], else: bodies[1]
    kSet,         // set targets (or namespace.attr) = expr
    kSetBlock,    // set targets[0] %} bodies[0] {% endset
    kBreak, kContinue,
    kGeneration,  // {% generation %} bodies[0] {% endgeneration %}
    kMacro,       // macro name(targets = defaults) bodies[0]
  };
  Kind kind;
  int line = 0;
  std::string text;                 // kText; namespace name of kSet on an attribute
  std::string attribute;            // kSet: ns.attribute
  std::vector<std::string> targets;
  ExprPtr expr;                     // kOutput, kFor iterable, kSet value
  ExprPtr filter;                   // kFor's `if`
  std::vector<ExprPtr> conditions;  // kIf; kMacro: defaults (null: none)
  std::vector<Body> bodies;
};

}  // namespace paft::tokenizer::jinja

#endif  // PAFT_TOKENIZER_JINJA_AST_H_
