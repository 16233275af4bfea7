#include "sluice/common/env.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace {

class EnvTest : public ::testing::Test {
 protected:
  void TearDown() override { unsetenv("SLUICE_TEST_VAR"); }
};

TEST_F(EnvTest, UnsetGivesFallback) {
  unsetenv("SLUICE_TEST_VAR");
  EXPECT_FALSE(sluice::env::get("SLUICE_TEST_VAR").has_value());
  EXPECT_TRUE(*sluice::env::get_bool("SLUICE_TEST_VAR", true));
  EXPECT_EQ(*sluice::env::get_u64("SLUICE_TEST_VAR", 42), 42u);
}

TEST_F(EnvTest, BooleanSpellings) {
  for (const char* yes : {"1", "true", "YES", "On"}) {
    setenv("SLUICE_TEST_VAR", yes, 1);
    auto value = sluice::env::get_bool("SLUICE_TEST_VAR", false);
    ASSERT_TRUE(value.ok()) << yes;
    EXPECT_TRUE(*value) << yes;
  }
  for (const char* no : {"0", "false", "No", "OFF"}) {
    setenv("SLUICE_TEST_VAR", no, 1);
    auto value = sluice::env::get_bool("SLUICE_TEST_VAR", true);
    ASSERT_TRUE(value.ok()) << no;
    EXPECT_FALSE(*value) << no;
  }
}

TEST_F(EnvTest, MalformedValuesNameTheVariable) {
  setenv("SLUICE_TEST_VAR", "maybe", 1);
  auto flag = sluice::env::get_bool("SLUICE_TEST_VAR", true);
  ASSERT_FALSE(flag.ok());
  EXPECT_NE(flag.error().message.find("SLUICE_TEST_VAR='maybe'"), std::string::npos);

  for (const char* bad : {"", "-1", "12x", "0x10"}) {
    setenv("SLUICE_TEST_VAR", bad, 1);
    auto number = sluice::env::get_u64("SLUICE_TEST_VAR", 7);
    ASSERT_FALSE(number.ok()) << "'" << bad << "'";
    EXPECT_NE(number.error().message.find("SLUICE_TEST_VAR"), std::string::npos);
  }
  setenv("SLUICE_TEST_VAR", "18446744073709551615", 1);
  EXPECT_EQ(*sluice::env::get_u64("SLUICE_TEST_VAR", 0), 18446744073709551615ull);
}

}  // namespace
