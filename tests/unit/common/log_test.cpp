#include "sluice/common/log.h"

#include <gtest/gtest.h>

#include <thread>

namespace {

TEST(LogTest, ParsesLevelNames) {
  sluice::log::Level level{};
  ASSERT_TRUE(sluice::log::parse_level("DEBUG", level));
  EXPECT_EQ(level, sluice::log::Level::debug);
  ASSERT_TRUE(sluice::log::parse_level("warning", level));
  EXPECT_EQ(level, sluice::log::Level::warn);
  EXPECT_FALSE(sluice::log::parse_level("verbose", level));
  EXPECT_FALSE(sluice::log::parse_level("", level));
}

TEST(LogTest, LevelGatesOutput) {
  sluice::log::set_level(sluice::log::Level::warn);
  EXPECT_TRUE(sluice::log::enabled(sluice::log::Level::error));
  EXPECT_TRUE(sluice::log::enabled(sluice::log::Level::warn));
  EXPECT_FALSE(sluice::log::enabled(sluice::log::Level::info));
  sluice::log::set_level(sluice::log::Level::trace);
  EXPECT_TRUE(sluice::log::enabled(sluice::log::Level::trace));
  sluice::log::set_level(sluice::log::Level::warn);
}

TEST(LogTest, LongMessagesAreTruncatedNotOverflowed) {
  testing::internal::CaptureStderr();
  sluice::log::write(sluice::log::Level::error, std::string(5000, 'x'));
  std::string out = testing::internal::GetCapturedStderr();
  EXPECT_LE(out.size(), 1024u);
  EXPECT_EQ(out.back(), '\n');
  EXPECT_NE(out.find("error: xxx"), std::string::npos);
}

TEST(LogTest, RateLimitAdmitsOncePerInterval) {
  sluice::log::RateLimit limit(60ull * 1000 * 1000 * 1000);
  EXPECT_TRUE(limit.admit());
  int admitted = 0;
  std::thread a([&] { for (int i = 0; i < 1000; ++i) admitted += limit.admit() ? 1 : 0; });
  a.join();
  EXPECT_EQ(admitted, 0);
}

}  // namespace
