// ToValidUtf8 against protobuf's own check: what it returns always travels in a string field.
#include "common/utf8.h"

#include <gtest/gtest.h>

#include <string>

#include "paft/v1/worker.pb.h"

namespace paft {
namespace {

// Whether protobuf accepts `text` in a string field (it refuses to parse invalid UTF-8).
bool ProtoAccepts(const std::string& text) {
  paft::v1::ReportExitRequest sent;
  sent.set_message(text);
  std::string wire;
  sent.SerializeToString(&wire);
  paft::v1::ReportExitRequest received;
  return received.ParseFromString(wire) && received.message() == text;
}

TEST(Utf8Test, ValidTextIsUnchanged) {
  for (const std::string text :
       {std::string(""), std::string("plain ascii\n"), std::string("caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87"),
        std::string("emoji \xF0\x9F\x98\x80, max \xF4\x8F\xBF\xBF"), std::string("nul \0 inside", 12)}) {
    EXPECT_EQ(ToValidUtf8(text), text);
    EXPECT_TRUE(ProtoAccepts(text));
  }
}

TEST(Utf8Test, EveryMalformedByteBecomesOneReplacementCharacter) {
  const std::string fffd = "\xEF\xBF\xBD";
  const struct {
    std::string in, out;
  } cases[] = {
      {"\xFF\xFE binary \x01 noise", fffd + fffd + " binary \x01 noise"},  // the hostile trainer's
      {"cut \xE4\xB8", "cut " + fffd + fffd},                   // a tail cut inside a character
      {"\xC0\xAF", fffd + fffd},                                 // an overlong '/'
      {"\xE0\x80\xAF", fffd + fffd + fffd},                      // overlong, 3 bytes
      {"\xED\xA0\x80", fffd + fffd + fffd},                      // a surrogate (U+D800)
      {"\xF4\x90\x80\x80", fffd + fffd + fffd + fffd},           // above U+10FFFF
      {"\x80 lone continuation", fffd + " lone continuation"},
  };
  for (const auto& c : cases) {
    EXPECT_FALSE(ProtoAccepts(c.in)) << c.in;  // what protobuf refuses ...
    EXPECT_EQ(ToValidUtf8(c.in), c.out) << c.in;
    EXPECT_TRUE(ProtoAccepts(ToValidUtf8(c.in))) << c.in;  // ... and accepts after
  }
}

TEST(Utf8Test, AnyByteStringComesOutAcceptable) {
  // Every single byte and every pair: what the fix returns always parses.
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; b += 7) {
      const std::string bytes = {static_cast<char>(a), static_cast<char>(b)};
      ASSERT_TRUE(ProtoAccepts(ToValidUtf8(bytes))) << a << " " << b;
    }
  }
}

}  // namespace
}  // namespace paft
