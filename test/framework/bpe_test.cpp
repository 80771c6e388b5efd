// clinic's BPE applier against subword-nmt's own output: the fixture's 500
// tokenized IWSLT'14 valid lines with fairseq's 10k-merge codes must give
// exactly the BPE'd lines prepare-iwslt14.sh wrote. Plus hand-worked cases of
// apply_bpe.py's rules (end-of-word mark, overlapping pairs, spaces).
#include "framework/data/bpe.h"

#include <filesystem>

#include "framework/data/text.h"
#include "framework/errors.h"
#include "test/support.h"

namespace clinic {
namespace {

namespace fs = std::filesystem;

TEST(Bpe, ReproducesPrepareIwslt14ByteForByte) {
  fs::path fx = fs::path(kSourceDir) / "test/data/iwslt14";
  BpeCodes bpe((fx / "bpe10k/code").string());
  EXPECT_EQ(bpe.merges(), 10000u);
  for (std::string lang : {"de", "en"}) {
    auto tok = read_lines((fx / ("valid." + lang)).string());
    auto want = read_lines((fx / ("bpe10k/valid." + lang)).string());
    ASSERT_EQ(tok.size(), want.size());
    size_t differ = 0, split = 0;
    for (size_t i = 0; i < tok.size(); ++i) {
      std::string got = bpe.apply_line(tok[i]);
      if (got != want[i] && differ++ < 3)
        ADD_FAILURE() << lang << " line " << i + 1 << "\n got: " << got << "\nwant: " << want[i];
      split += got.find("@@ ") != std::string::npos;
    }
    EXPECT_EQ(differ, 0u) << lang;
    EXPECT_GT(split, 100u) << "the codes split words: the test compares real segmentations";
  }
}

TEST(Bpe, FollowsApplyBpeRules) {
  test::TempDir d;
  test::write_text(d.file("codes"), "#version: 0.2\na b\nab c</w>\na a\nü x</w>\n");
  BpeCodes bpe(d.file("codes"));
  EXPECT_EQ(bpe.apply_line("abc"), "abc");         // ab + c</w> -> abc</w>, mark dropped
  EXPECT_EQ(bpe.apply_line("abd"), "ab@@ d");      // d</w> has no merge
  EXPECT_EQ(bpe.apply_line("aaa"), "aa@@ a");      // (a a) twice, overlapping: left first
  EXPECT_EQ(bpe.apply_line("aaaa"), "aa@@ a@@ a");  // (a a</w>) is no merge; (aa a) neither
  EXPECT_EQ(bpe.apply_line("c"), "c");             // one character: untouched
  EXPECT_EQ(bpe.apply_line("üx"), "üx");           // code points, not bytes
  EXPECT_EQ(bpe.apply_line("  abd  abc "), "  ab@@ d abc ");  // ends kept, inner runs collapse
  EXPECT_EQ(bpe.apply_line("   "), "   ");
  EXPECT_EQ(bpe.apply_line(""), "");
  // Version 0.1 (no header): "</w>" is a symbol of its own.
  test::write_text(d.file("v01"), "a b\nab </w>\n");
  BpeCodes old(d.file("v01"));
  EXPECT_EQ(old.apply_line("ab"), "ab");
  EXPECT_EQ(old.apply_line("abab"), "ab@@ ab");
  // A merge line that is not two symbols names file and line.
  test::write_text(d.file("bad"), "#version: 0.2\na b\na b c\n");
  EXPECT_NE(test::error_of<DataError>([&] { BpeCodes b(d.file("bad")); }).find(d.file("bad") + ":3:"),
            std::string::npos);
}

}  // namespace
}  // namespace clinic
