#include "sluice/common/result.h"

#include <gtest/gtest.h>

#include <memory>

namespace {

sluice::Result<int> parse_positive(int value) {
  if (value <= 0) return sluice::make_error("value {} is not positive", value);
  return value;
}

TEST(ResultTest, CarriesValueOrError) {
  auto good = parse_positive(3);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 3);

  auto bad = parse_positive(-2);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "value -2 is not positive");
}

TEST(ResultTest, ContextPrefixesTheMessage) {
  auto bad = parse_positive(0);
  sluice::Error error = std::move(bad).take_error().context("policy.json: $.rules[2].priority");
  EXPECT_EQ(error.message, "policy.json: $.rules[2].priority: value 0 is not positive");
}

TEST(ResultTest, MoveOnlyValues) {
  sluice::Result<std::unique_ptr<int>> boxed = std::make_unique<int>(9);
  ASSERT_TRUE(boxed.ok());
  std::unique_ptr<int> out = std::move(boxed).value();
  EXPECT_EQ(*out, 9);
}

TEST(ResultTest, StatusDefaultsToSuccess) {
  sluice::Status fine;
  EXPECT_TRUE(fine.ok());
  sluice::Status failed = sluice::make_error("socket {} unreachable", "/run/x.sock");
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().message, "socket /run/x.sock unreachable");
}

}  // namespace
