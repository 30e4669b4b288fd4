// Values of the Jinja interpreter (tokenizer/jinja), with Python's semantics where chat templates
// rely on them: truthiness, equality, str() and repr(), integer and float arithmetic. Lists and
// dicts are shared (reference semantics, as in Python); dicts keep insertion order.
#ifndef PAFT_TOKENIZER_JINJA_VALUE_H_
#define PAFT_TOKENIZER_JINJA_VALUE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace paft::tokenizer::jinja {

class Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // insertion order
struct CallArgs;
using Function = std::function<absl::StatusOr<Value>(const CallArgs&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;  // undefined
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double d);
  static Value String(std::string s);
  static Value MakeList(List items = {});
  static Value MakeDict(Dict items = {}, bool is_namespace = false);
  static Value MakeFunction(Function f);
  static Value FromJson(const nlohmann::ordered_json& j);  // keys keep their order

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kDict && is_namespace_; }

  bool boolean() const { return b_; }
  int64_t integer() const { return i_; }
  double number() const { return kind_ == Kind::kInt ? static_cast<double>(i_) : d_; }
  const std::string& string() const { return *s_; }
  List& list() const { return *list_; }
  Dict& dict() const { return *dict_; }
  const Function& function() const { return *fn_; }

  // dict lookup (undefined when absent); namespace and dict assignment.
  Value Get(const std::string& key) const;
  void Set(const std::string& key, Value v) const;

  bool Truthy() const;
  std::string Str() const;   // Python's str(); undefined prints as ""
  std::string Repr() const;  // Python's repr()
  // json.dumps(x, ensure_ascii=False, indent, separators (item, key), sort_keys).
  absl::StatusOr<std::string> ToJson(int indent, const std::string& item_separator,
                                     const std::string& key_separator, bool sort_keys) const;
  std::string TypeName() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  bool is_namespace_ = false;
  std::shared_ptr<std::string> s_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Function> fn_;
};

// Python's ==.
bool Equal(const Value& a, const Value& b);

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // Positional `index`, else keyword `name`, else `fallback`.
  Value Arg(size_t index, const std::string& name, Value fallback = Value()) const;
};

// Python's float repr (shortest round-trip digits, ".0" for integral values).
std::string FloatRepr(double d);

}  // namespace paft::tokenizer::jinja

#endif  // PAFT_TOKENIZER_JINJA_VALUE_H_
