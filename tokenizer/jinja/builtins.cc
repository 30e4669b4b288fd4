#include "tokenizer/jinja/builtins.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <cmath>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/hf/unicode.h"

namespace paft::tokenizer::jinja {
namespace {

absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(what); }

// Python's str.isspace() for one code point.
bool IsPythonSpace(char32_t c) { return (c >= 0x1C && c <= 0x1F) || hf::IsWhitespace(c); }

}  // namespace

std::string MapCase(const std::string& s, bool upper) {
  std::string out;
  for (size_t pos = 0; pos < s.size();) {
    const char32_t c = hf::NextCodePoint(s, &pos);
    hf::AppendUtf8(static_cast<char32_t>(upper ? u_toupper(static_cast<UChar32>(c))
                                               : u_tolower(static_cast<UChar32>(c))),
                   &out);
  }
  return out;
}

// Python's str.title(): a letter after a non-letter is upper-cased, others lower-cased.
std::string Title(const std::string& s) {
  std::string out;
  bool previous_cased = false;
  for (size_t pos = 0; pos < s.size();) {
    const char32_t c = hf::NextCodePoint(s, &pos);
    const bool letter = u_isalpha(static_cast<UChar32>(c));
    const UChar32 mapped = previous_cased ? u_tolower(static_cast<UChar32>(c)) : u_totitle(static_cast<UChar32>(c));
    hf::AppendUtf8(static_cast<char32_t>(mapped), &out);
    previous_cased = letter;
  }
  return out;
}

std::string Capitalize(const std::string& s) {
  if (s.empty()) return s;
  size_t pos = 0;
  const char32_t first = hf::NextCodePoint(s, &pos);
  std::string out;
  hf::AppendUtf8(static_cast<char32_t>(u_totitle(static_cast<UChar32>(first))), &out);
  return out + MapCase(s.substr(pos), false);
}

static std::vector<std::string> Split(const std::string& s, const Value& sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep.is_undefined() || sep.is_none()) {  // runs of whitespace, no empty parts
    size_t pos = 0;
    while (pos < s.size()) {
      size_t next = pos;
      while (pos < s.size()) {
        next = pos;
        if (!IsPythonSpace(hf::NextCodePoint(s, &next))) break;
        pos = next;
      }
      if (pos >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        parts.push_back(s.substr(pos));  // Python keeps the remainder's trailing whitespace
        return parts;
      }
      size_t end = pos;
      while (end < s.size()) {
        size_t after = end;
        if (IsPythonSpace(hf::NextCodePoint(s, &after))) break;
        end = after;
      }
      parts.push_back(s.substr(pos, end - pos));
      pos = end;
    }
    return parts;
  }
  const std::string& d = sep.string();
  size_t pos = 0;
  while (true) {
    const size_t at = s.find(d, pos);
    if (at == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit)) {
      parts.push_back(s.substr(pos));
      return parts;
    }
    parts.push_back(s.substr(pos, at - pos));
    pos = at + d.size();
  }
}

static Value StringList(const std::vector<std::string>& parts) {
  List items;
  for (const std::string& p : parts) items.push_back(Value::String(p));
  return Value::MakeList(std::move(items));
}

static absl::StatusOr<std::string> ArgString(const CallArgs& args, size_t i, const std::string& name,
                                      const std::string& function) {
  Value v = args.Arg(i, name);
  if (!v.is_string()) return Bad(absl::StrCat(function, ": '", name, "' must be a string"));
  return v.string();
}

absl::StatusOr<Value> StringMethod(const std::string& s, const std::string& name,
                                   const CallArgs& args) {
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    return Value::String(Strip(s, args.Arg(0, "chars"), name != "rstrip", name != "lstrip"));
  }
  if (name == "split") {
    Value sep = args.Arg(0, "sep");
    Value max = args.Arg(1, "maxsplit", Value::Int(-1));
    if (!sep.is_string() && !sep.is_none() && !sep.is_undefined()) {
      return Bad("split: the separator must be a string or None");
    }
    if (max.kind() != Value::Kind::kInt) return Bad("split: maxsplit must be an integer");
    if (sep.is_string() && sep.string().empty()) return Bad("split: empty separator");
    return StringList(Split(s, sep, max.integer()));
  }
  if (name == "startswith" || name == "endswith") {
    Value what = args.Arg(0, "prefix");
    std::vector<std::string> options;
    if (what.is_string()) options.push_back(what.string());
    if (what.is_list()) {
      for (const Value& v : what.list()) options.push_back(v.Str());
    }
    for (const std::string& o : options) {
      const bool hit = name == "startswith"
                           ? s.compare(0, o.size(), o) == 0
                           : s.size() >= o.size() && s.compare(s.size() - o.size(), o.size(), o) == 0;
      if (hit) return Value::Bool(true);
    }
    return Value::Bool(false);
  }
  if (name == "upper" || name == "lower") return Value::String(MapCase(s, name == "upper"));
  if (name == "title") return Value::String(Title(s));
  if (name == "capitalize") return Value::String(Capitalize(s));
  if (name == "replace") {
    PAFT_ASSIGN_OR_RETURN(std::string old, ArgString(args, 0, "old", "replace"));
    PAFT_ASSIGN_OR_RETURN(std::string with, ArgString(args, 1, "new", "replace"));
    int64_t count = args.Arg(2, "count", Value::Int(-1)).integer();
    std::string out;
    size_t pos = 0;
    while (count != 0) {
      const size_t at = old.empty() ? std::string::npos : s.find(old, pos);
      if (at == std::string::npos) break;
      out += s.substr(pos, at - pos) + with;
      pos = at + old.size();
      --count;
    }
    return Value::String(out + s.substr(pos));
  }
  if (name == "find") {
    PAFT_ASSIGN_OR_RETURN(std::string what, ArgString(args, 0, "sub", "find"));
    const size_t at = s.find(what);
    if (at == std::string::npos) return Value::Int(-1);
    return Value::Int(static_cast<int64_t>(CodePoints(s.substr(0, at)).size()));
  }
  if (name == "count") {
    PAFT_ASSIGN_OR_RETURN(std::string what, ArgString(args, 0, "sub", "count"));
    int64_t n = 0;
    for (size_t at = s.find(what); !what.empty() && at != std::string::npos; at = s.find(what, at + what.size())) ++n;
    return Value::Int(n);
  }
  if (name == "join") {
    Value items = args.Arg(0, "iterable");
    if (!items.is_list()) return Bad("join: needs a list");
    std::string out;
    for (size_t i = 0; i < items.list().size(); ++i) {
      if (i > 0) out += s;
      out += items.list()[i].Str();
    }
    return Value::String(out);
  }
  return Bad(absl::StrCat("string method '", name, "' is not supported"));
}

absl::StatusOr<Value> DictMethod(const Value& d, const std::string& name, const CallArgs& args) {
  if (name == "items") {
    List items;
    for (const auto& [k, v] : d.dict()) items.push_back(Value::MakeList({Value::String(k), v}));
    return Value::MakeList(std::move(items));
  }
  if (name == "keys" || name == "values") {
    List items;
    for (const auto& [k, v] : d.dict()) items.push_back(name == "keys" ? Value::String(k) : v);
    return Value::MakeList(std::move(items));
  }
  if (name == "get") {
    Value v = d.Get(args.Arg(0, "key").Str());
    return v.is_undefined() ? args.Arg(1, "default", Value::None()) : v;
  }
  return Bad(absl::StrCat("dict method '", name, "' is not supported"));
}

static bool IsMethod(const Value& object, const std::string& name) {
  static const std::vector<std::string> kString = {
      "strip", "lstrip", "rstrip", "split", "startswith", "endswith", "upper", "lower",
      "title", "capitalize", "replace", "find", "count", "join"};
  static const std::vector<std::string> kDict = {"items", "keys", "values", "get"};
  const auto& names = object.is_string() ? kString : kDict;
  return std::find(names.begin(), names.end(), name) != names.end();
}

absl::StatusOr<Value> Length(const Value& v) {
  if (v.is_string()) return Value::Int(static_cast<int64_t>(CodePoints(v.string()).size()));
  if (v.is_list()) return Value::Int(static_cast<int64_t>(v.list().size()));
  if (v.is_dict()) return Value::Int(static_cast<int64_t>(v.dict().size()));
  if (v.is_undefined()) return Value::Int(0);
  return Bad(absl::StrCat("length: a ", v.TypeName(), " has no length"));
}

// The items a filter iterates: a list's, a dict's keys, a string's characters.
std::vector<Value> Items(const Value& v) {
  if (v.is_list()) return v.list();
  std::vector<Value> out;
  if (v.is_dict()) {
    for (const auto& [k, x] : v.dict()) out.push_back(Value::String(k));
  } else if (v.is_string()) {
    for (const std::string& c : CodePoints(v.string())) out.push_back(Value::String(c));
  }
  return out;
}

// `attribute` of a filter: "a.b" paths and integer indexes, as Jinja's make_attrgetter.
Value Attribute(const Value& item, const std::string& path) {
  Value v = item;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool numeric = !part.empty() && part.size() < 19 && std::all_of(part.begin(), part.end(), ::isdigit);
    v = numeric ? GetItem(v, Value::Int(std::stoll(part))) : GetItem(v, Value::String(part));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return v;
}

std::vector<std::string> CodePoints(const std::string& s) {
  std::vector<std::string> out;
  for (size_t pos = 0; pos < s.size();) {
    const size_t begin = pos;
    hf::NextCodePoint(s, &pos);
    out.push_back(s.substr(begin, pos - begin));
  }
  return out;
}

std::string Strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<std::string> set;
  const bool whitespace = !chars.is_string();
  if (!whitespace) set = CodePoints(chars.string());
  auto strip_char = [&](const std::string& c) {
    if (whitespace) {
      size_t pos = 0;
      return IsPythonSpace(hf::NextCodePoint(c, &pos));
    }
    return std::find(set.begin(), set.end(), c) != set.end();
  };
  std::vector<std::string> cps = CodePoints(s);
  size_t begin = 0, end = cps.size();
  while (left && begin < end && strip_char(cps[begin])) ++begin;
  while (right && end > begin && strip_char(cps[end - 1])) --end;
  std::string out;
  for (size_t i = begin; i < end; ++i) out += cps[i];
  return out;
}

absl::StatusOr<Value> GetAttribute(const Value& object, const std::string& name) {
  if ((object.is_string() || (object.is_dict() && !object.is_namespace())) && IsMethod(object, name)) {
    return Value::MakeFunction([object, name](const CallArgs& args) -> absl::StatusOr<Value> {
      if (object.is_string()) return StringMethod(object.string(), name, args);
      return DictMethod(object, name, args);
    });
  }
  if (object.is_list() && (name == "append" || name == "pop" || name == "insert" || name == "extend")) {
    return Bad(absl::StrCat("list.", name, " is not allowed (templates run sandboxed and immutable)"));
  }
  if (object.is_dict()) return object.Get(name);
  return Value();
}

Value GetItem(const Value& object, const Value& key) {
  if (object.is_dict() && key.is_string()) return object.Get(key.string());
  if ((object.is_list() || object.is_string()) && key.kind() == Value::Kind::kInt) {
    if (object.is_list()) {
      int64_t i = key.integer();
      const int64_t n = static_cast<int64_t>(object.list().size());
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();
      return object.list()[static_cast<size_t>(i)];
    }
    const std::vector<std::string> cps = CodePoints(object.string());
    int64_t i = key.integer();
    const int64_t n = static_cast<int64_t>(cps.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return Value();
    return Value::String(cps[static_cast<size_t>(i)]);
  }
  if (key.is_string()) {
    auto attribute = GetAttribute(object, key.string());
    if (attribute.ok()) return *attribute;
  }
  return Value();
}

absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& value, const CallArgs& args) {
  using K = Value::Kind;
  if (name == "defined") return !value.is_undefined();
  if (name == "undefined") return value.is_undefined();
  if (name == "none") return value.is_none();
  if (name == "string") return value.is_string();
  if (name == "number") return value.is_number() || value.kind() == K::kBool;  // bool is a Number
  if (name == "integer") return value.kind() == K::kInt;
  if (name == "float") return value.kind() == K::kFloat;
  if (name == "boolean") return value.kind() == K::kBool;
  if (name == "true") return value.kind() == K::kBool && value.boolean();
  if (name == "false") return value.kind() == K::kBool && !value.boolean();
  if (name == "mapping") return value.is_dict();
  if (name == "iterable") return value.is_list() || value.is_dict() || value.is_string();
  if (name == "sequence") return value.is_list() || value.is_dict() || value.is_string();
  if (name == "callable") return value.kind() == K::kFunction;
  if (name == "equalto" || name == "eq" || name == "==") return Equal(value, args.Arg(0, "other"));
  if (name == "sameas") {  // identity: for the values a template can compare, same kind and value
    const Value other = args.Arg(0, "other");
    return value.kind() == other.kind() && Equal(value, other);
  }
  if (name == "ne" || name == "!=") return !Equal(value, args.Arg(0, "other"));
  if (name == "odd" || name == "even") {
    if (value.kind() != K::kInt) return Bad(absl::StrCat(name, ": needs an integer"));
    return (value.integer() % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    const Value n = args.Arg(0, "num");
    if (value.kind() != K::kInt || n.kind() != K::kInt || n.integer() == 0) return Bad("divisibleby: needs integers");
    return value.integer() % n.integer() == 0;
  }
  if (name == "lower" || name == "upper") {  // Python's islower()/isupper(): a cased letter too
    if (!value.is_string()) return false;
    const std::string& s = value.string();
    return s != MapCase(s, name != "upper") && s == MapCase(s, name == "upper");
  }
  if (name == "in") {
    const Value container = args.Arg(0, "seq");
    if (container.is_string()) return value.is_string() && container.string().find(value.string()) != std::string::npos;
    if (container.is_list()) {
      return std::any_of(container.list().begin(), container.list().end(),
                         [&](const Value& v) { return Equal(v, value); });
    }
    if (container.is_dict()) return value.is_string() && !container.Get(value.string()).is_undefined();
    if (container.is_undefined()) return false;  // an undefined value iterates as empty
    return Bad(absl::StrCat("'in' a ", container.TypeName()));
  }
  return Bad(absl::StrCat("test '", name, "' is not supported"));
}

Value Globals() {
  Dict globals;
  globals.emplace_back("range", Value::MakeFunction([](const CallArgs& args) -> absl::StatusOr<Value> {
    int64_t start = 0, stop = 0, step = 1;
    for (const Value& v : args.positional) {
      if (v.kind() != Value::Kind::kInt) return Bad("range: needs integers");
    }
    if (args.positional.size() == 1) {
      stop = args.positional[0].integer();
    } else if (args.positional.size() >= 2) {
      start = args.positional[0].integer();
      stop = args.positional[1].integer();
      if (args.positional.size() == 3) step = args.positional[2].integer();
    }
    if (step == 0) return Bad("range: step cannot be zero");
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value::Int(i));
    return Value::MakeList(std::move(out));
  }));
  globals.emplace_back("namespace", Value::MakeFunction([](const CallArgs& args) -> absl::StatusOr<Value> {
    Dict items;
    for (const Value& v : args.positional) {
      if (v.is_dict()) items.insert(items.end(), v.dict().begin(), v.dict().end());
    }
    for (const auto& [k, v] : args.keyword) items.emplace_back(k, v);
    return Value::MakeDict(std::move(items), /*is_namespace=*/true);
  }));
  globals.emplace_back("dict", Value::MakeFunction([](const CallArgs& args) -> absl::StatusOr<Value> {
    Dict items(args.keyword.begin(), args.keyword.end());
    return Value::MakeDict(std::move(items));
  }));
  globals.emplace_back("raise_exception", Value::MakeFunction([](const CallArgs& args) -> absl::StatusOr<Value> {
    return absl::InvalidArgumentError(absl::StrCat("raise_exception: ", args.Arg(0, "message").Str()));
  }));
  globals.emplace_back("strftime_now", Value::MakeFunction([](const CallArgs& args) -> absl::StatusOr<Value> {
    const std::string format = args.Arg(0, "format").Str();
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buffer[256];
    const size_t n = std::strftime(buffer, sizeof(buffer), format.c_str(), &local);
    return Value::String(std::string(buffer, n));
  }));
  return Value::MakeDict(std::move(globals));
}

}  // namespace paft::tokenizer::jinja
