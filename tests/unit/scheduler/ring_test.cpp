// SPSC rings: order, wrap-around, full and corrupt rings, doorbells, and a two-thread stress test
// (also run under ThreadSanitizer).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "sluice/protocol/doorbell.h"
#include "sluice/protocol/ring.h"

namespace sluice::protocol {
namespace {

struct TestRing {
  explicit TestRing(std::uint32_t slot_count) : slots(slot_count), capacity(slot_count) {}
  RingWriter writer() { return RingWriter(&control, slots.data(), capacity); }
  RingReader reader() { return RingReader(&control, slots.data(), capacity); }

  RingControl control{};
  std::vector<Slot> slots;
  std::uint32_t capacity;
};

Slot numbered(std::uint64_t n) {
  Slot slot{};
  std::memcpy(slot.bytes, &n, sizeof(n));
  slot.bytes[sizeof(Slot) - 1] = static_cast<std::uint8_t>(n * 7);
  return slot;
}

std::uint64_t number_of(const Slot& slot) {
  std::uint64_t n = 0;
  std::memcpy(&n, slot.bytes, sizeof(n));
  EXPECT_EQ(slot.bytes[sizeof(Slot) - 1], static_cast<std::uint8_t>(n * 7)) << "torn slot " << n;
  return n;
}

TEST(Ring, DeliversInOrderAcrossManyWrapArounds) {
  TestRing ring(8);
  RingWriter writer = ring.writer();
  RingReader reader = ring.reader();
  std::uint64_t next_out = 0;
  for (std::uint64_t n = 0; n < 1000; ++n) {
    Slot slot = numbered(n);
    ASSERT_EQ(writer.push(&slot, sizeof(slot)), RingResult::ok);
    if (n % 3 == 2) {  // consume in uneven batches so head and tail wrap at different points
      Slot out{};
      while (reader.pop(out) == RingResult::ok) EXPECT_EQ(number_of(out), next_out++);
    }
  }
  Slot out{};
  while (reader.pop(out) == RingResult::ok) EXPECT_EQ(number_of(out), next_out++);
  EXPECT_EQ(next_out, 1000u);
  EXPECT_EQ(ring.control.head, 1000u);
  EXPECT_EQ(ring.control.tail, 1000u);
}

TEST(Ring, ReportsFullWithoutOverwriting) {
  TestRing ring(4);
  RingWriter writer = ring.writer();
  RingReader reader = ring.reader();
  for (std::uint64_t n = 0; n < 4; ++n) {
    Slot slot = numbered(n);
    ASSERT_EQ(writer.push(&slot, sizeof(slot)), RingResult::ok);
  }
  Slot extra = numbered(99);
  EXPECT_EQ(writer.push(&extra, sizeof(extra)), RingResult::full);
  EXPECT_EQ(writer.free_slots(), 0u);
  Slot out{};
  ASSERT_EQ(reader.pop(out), RingResult::ok);
  EXPECT_EQ(number_of(out), 0u);
  EXPECT_EQ(writer.push(&extra, sizeof(extra)), RingResult::ok);
  std::vector<Slot> batch(8);
  bool corrupt = false;
  ASSERT_EQ(reader.pop_batch(batch.data(), batch.size(), corrupt), 4u);
  EXPECT_FALSE(corrupt);
  EXPECT_EQ(number_of(batch[0]), 1u);
  EXPECT_EQ(number_of(batch[3]), 99u);
  EXPECT_EQ(reader.pop(out), RingResult::empty);
}

TEST(Ring, ShortMessagesAreZeroPadded) {
  TestRing ring(2);
  RingWriter writer = ring.writer();
  RingReader reader = ring.reader();
  Slot full{};
  std::memset(full.bytes, 0xff, sizeof(full.bytes));
  ASSERT_EQ(writer.push(&full, sizeof(full)), RingResult::ok);
  Slot out{};
  ASSERT_EQ(reader.pop(out), RingResult::ok);
  std::uint32_t small = 0x12345678;
  ASSERT_EQ(writer.push(&small, sizeof(small)), RingResult::ok);
  ASSERT_EQ(writer.push(&small, sizeof(small)), RingResult::ok);
  ASSERT_EQ(reader.pop(out), RingResult::ok);
  ASSERT_EQ(reader.pop(out), RingResult::ok);
  EXPECT_EQ(out.bytes[0], 0x78);
  for (std::size_t i = sizeof(small); i < sizeof(out.bytes); ++i) ASSERT_EQ(out.bytes[i], 0) << i;
}

TEST(Ring, ScribbledIndicesAreReportedAsCorrupt) {
  TestRing ring(4);
  RingReader reader = ring.reader();
  ring.control.head = 1000;  // a hostile producer claims more than the ring holds
  Slot out{};
  EXPECT_EQ(reader.pop(out), RingResult::corrupt);
  bool corrupt = false;
  EXPECT_EQ(reader.pop_batch(&out, 1, corrupt), 0u);
  EXPECT_TRUE(corrupt);
  EXPECT_EQ(reader.pending(), 0u);

  TestRing other(4);
  RingWriter other_writer = other.writer();
  other.control.tail = 7;  // a hostile consumer claims to have read what was never written
  EXPECT_EQ(other_writer.push(&out, sizeof(out)), RingResult::corrupt);
  EXPECT_EQ(other_writer.free_slots(), 0u);
}

TEST(Ring, ReaderKeepsItsOwnTail) {
  TestRing ring(4);
  RingWriter writer = ring.writer();
  RingReader reader = ring.reader();
  Slot slot = numbered(5);
  ASSERT_EQ(writer.push(&slot, sizeof(slot)), RingResult::ok);
  ring.control.tail = 0xdead;  // scribbled by the peer: the reader does not re-read it
  Slot out{};
  ASSERT_EQ(reader.pop(out), RingResult::ok);
  EXPECT_EQ(number_of(out), 5u);
  EXPECT_EQ(ring.control.tail, 1u);
}

TEST(Ring, ProducerRingsOnlyWhenTheConsumerSleeps) {
  TestRing ring(4);
  RingWriter writer = ring.writer();
  RingReader reader = ring.reader();
  Slot slot = numbered(1);
  ASSERT_EQ(writer.push(&slot, sizeof(slot)), RingResult::ok);
  EXPECT_FALSE(writer.should_ring());
  EXPECT_FALSE(reader.prepare_wait()) << "a message is pending: the consumer must not sleep";
  Slot out{};
  ASSERT_EQ(reader.pop(out), RingResult::ok);
  ASSERT_TRUE(reader.prepare_wait());
  ASSERT_EQ(writer.push(&slot, sizeof(slot)), RingResult::ok);
  EXPECT_TRUE(writer.should_ring());
  reader.finish_wait();
  EXPECT_FALSE(writer.should_ring());
}

TEST(Doorbell, WaitTimesOutAndWakesOnRing) {
  int fd = make_doorbell();
  ASSERT_GE(fd, 0);
  EXPECT_FALSE(wait_doorbell(fd, 1000000));  // 1 ms, nothing rang
  ring_doorbell(fd);
  ring_doorbell(fd);
  EXPECT_TRUE(wait_doorbell(fd, 1000000000));
  EXPECT_FALSE(wait_doorbell(fd, 1000000)) << "two rings are one wake-up once drained";
  close(fd);
}

// One producer and one consumer thread, sleeping on a doorbell when the ring is empty.
TEST(Ring, TwoThreadStressKeepsOrderAndContent) {
  constexpr std::uint64_t kMessages = 200000;
  TestRing ring(64);
  int doorbell = make_doorbell();
  ASSERT_GE(doorbell, 0);
  std::thread producer([&] {
    RingWriter writer = ring.writer();
    for (std::uint64_t n = 0; n < kMessages;) {
      Slot slot = numbered(n);
      RingResult result = writer.push(&slot, sizeof(slot));
      ASSERT_NE(result, RingResult::corrupt);
      if (result == RingResult::ok) {
        ++n;
        if (writer.should_ring()) ring_doorbell(doorbell);
      } else {
        std::this_thread::yield();
      }
    }
  });
  RingReader reader = ring.reader();
  std::uint64_t expected = 0;
  std::vector<Slot> batch(16);
  while (expected < kMessages) {
    bool corrupt = false;
    std::size_t count = reader.pop_batch(batch.data(), batch.size(), corrupt);
    ASSERT_FALSE(corrupt);
    for (std::size_t i = 0; i < count; ++i) ASSERT_EQ(number_of(batch[i]), expected++);
    if (count == 0 && reader.prepare_wait()) {
      wait_doorbell(doorbell, 10000000);  // 10 ms: a lost wake-up would only cost time
      reader.finish_wait();
    }
  }
  producer.join();
  close(doorbell);
}

}  // namespace
}  // namespace sluice::protocol
