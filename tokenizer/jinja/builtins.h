// The filters, tests, methods and global functions of the Jinja interpreter.
#ifndef PAFT_TOKENIZER_JINJA_BUILTINS_H_
#define PAFT_TOKENIZER_JINJA_BUILTINS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/jinja/value.h"

namespace paft::tokenizer::jinja {

// `value | name(args)`.
absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& value, const CallArgs& args);
// `value is name(args)`.
absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& value, const CallArgs& args);
// `object.name` as Jinja resolves it: a bound method of strings, lists and dicts, else a dict's
// item (undefined when absent).
absl::StatusOr<Value> GetAttribute(const Value& object, const std::string& name);
// `object[key]` (undefined when absent or out of range).
Value GetItem(const Value& object, const Value& key);
// The globals: range, namespace, dict, raise_exception, strftime_now.
Value Globals();

// Shared by the filters and methods (builtins.cc, filters.cc).
std::string MapCase(const std::string& s, bool upper);  // str.upper() / str.lower()
std::string Title(const std::string& s);                // str.title()
std::string Capitalize(const std::string& s);           // str.capitalize()
absl::StatusOr<Value> StringMethod(const std::string& s, const std::string& name,
                                   const CallArgs& args);
absl::StatusOr<Value> DictMethod(const Value& d, const std::string& name, const CallArgs& args);
absl::StatusOr<Value> Length(const Value& v);
// The items a filter iterates: a list's, a dict's keys, a string's characters.
std::vector<Value> Items(const Value& v);
// A filter's `attribute` ("a.b" paths, integer indexes), as Jinja's make_attrgetter.
Value Attribute(const Value& item, const std::string& path);

// Python's str.strip(chars) family; `chars` undefined/None strips whitespace.
std::string Strip(const std::string& s, const Value& chars, bool left, bool right);
// The code points of a UTF-8 string as separate strings (Python's iteration over a str).
std::vector<std::string> CodePoints(const std::string& s);

}  // namespace paft::tokenizer::jinja

#endif  // PAFT_TOKENIZER_JINJA_BUILTINS_H_
