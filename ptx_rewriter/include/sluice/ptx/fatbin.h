// Readers for the containers that carry GPU code: fat binaries (magic 0xBA55ED50), the
// __cudaRegisterFatBinary wrapper (magic 0x466243B1) that points at one, and image classification.
//
// Fatbin layout (little-endian; learnt from nvcc/fatbinary 13.0 and the toolkit's libraries):
//   container header, 16 bytes: u32 magic, u16 version (1), u16 header_size (16), u64 body_size
//   then entries back to back until header_size + body_size, each:
//     0x00 u16 kind (1 PTX, 2 ELF)        0x02 u16 entry version (0x0101)
//     0x04 u32 header_size (64, 72, 80, 104 or 112: 64 fixed bytes, then name and extension data)
//     0x08 u64 payload_size (the stored payload, padded to 8)
//     0x10 u32 compressed_size (0 when not compressed)
//     0x14 u32 extension_offset (offset in the header of a {u32 offset, u32 size} record, or 0)
//     0x18 u16 version_minor, 0x1a u16 version_major (PTX ISA version, or cubin ABI version)
//     0x1c u32 arch (80 = sm_80 / compute_80)
//     0x20 u32 name_offset, 0x24 u32 name_size (the source name of debug entries, in the header)
//     0x28 u64 flags (kFlag* below)
//     0x30 u64 reserved
//     0x38 u64 uncompressed_size (0 when not compressed)
//   payload at entry + header_size.
// Compression: flag 0x2000 is an LZ4 block (nvcc --compress-mode=speed), 0x8000 a zstd frame
// (modes default, size and balance; every library in CUDA 13's lib64 uses zstd). Mode "default"
// compresses only PTX unless -Xfatbin -compress-all is given.
//
// Every reader takes a byte span and never reads outside it; a malformed input is an Error that
// names what is wrong and at which offset. Thread rules: free functions, no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/common/result.h"

namespace sluice::ptx {

using Bytes = std::span<const std::byte>;

inline constexpr std::uint32_t kFatbinMagic = 0xBA55ED50u;
inline constexpr std::uint32_t kFatbinWrapperMagic = 0x466243B1u;
inline constexpr std::uint32_t kFatbinHeaderSize = 16;
inline constexpr std::uint32_t kFatbinEntryFixedSize = 64;

inline constexpr std::uint64_t kFlag64Bit = 0x1;
inline constexpr std::uint64_t kFlagDebug = 0x2;
inline constexpr std::uint64_t kFlagLinux = 0x10;
inline constexpr std::uint64_t kFlagCompressedLz4 = 0x2000;
inline constexpr std::uint64_t kFlagCompressedZstd = 0x8000;
inline constexpr std::uint64_t kFlagArchSpecific = 0x100000;    // sm_90a, sm_100a, ...
inline constexpr std::uint64_t kFlagFamilySpecific = 0x200000;  // sm_100f, ...

enum class EntryKind : std::uint16_t { ptx = 1, elf = 2 };
enum class Compression { none, lz4, zstd };

std::string_view to_string(Compression compression);

struct FatbinEntry {
  std::uint64_t offset = 0;  // of the entry header, from the start of the parsed input
  std::uint16_t kind = 0;    // EntryKind, or an unknown value that is kept and reported
  std::uint32_t header_size = 0;
  std::uint64_t payload_offset = 0;
  std::uint64_t payload_size = 0;  // stored bytes, including padding
  std::uint32_t compressed_size = 0;
  std::uint16_t version_major = 0;
  std::uint16_t version_minor = 0;
  std::uint32_t arch = 0;
  std::uint64_t flags = 0;
  std::uint64_t uncompressed_size = 0;
  Compression compression = Compression::none;
  std::string name;  // from name_offset/name_size; usually empty
  Bytes payload;     // the stored payload (compressed bytes when compressed), a view into the input

  bool is_ptx() const { return kind == static_cast<std::uint16_t>(EntryKind::ptx); }
  bool is_elf() const { return kind == static_cast<std::uint16_t>(EntryKind::elf); }
  std::string_view kind_name() const;
  // "sm_90", "sm_90a", "compute_90", "compute_100f": the name nvcc uses for this entry.
  std::string arch_name() const;
  // Bytes of the payload once decompressed.
  std::uint64_t content_size() const;
};

struct Fatbin {
  std::uint64_t offset = 0;  // of the container header in the parsed input
  std::uint64_t size = 0;    // header + body
  std::uint16_t version = 0;
  std::vector<FatbinEntry> entries;
};

// Parses the one container at the start of `data`. Bytes after it are ignored.
Result<Fatbin> parse_fatbin(Bytes data);

// Parses the containers laid back to back in `data` (an ELF .nv_fatbin section), skipping zero
// padding between them. `base_offset` is added to every reported offset.
Result<std::vector<Fatbin>> parse_fatbins(Bytes data, std::uint64_t base_offset = 0);

struct DecompressLimits {
  // Refuse entries that claim more than this once decompressed.
  std::uint64_t max_bytes = std::uint64_t{1} << 31;
};

// The entry's content: the payload decompressed, or copied when stored uncompressed.
Result<std::vector<std::byte>> entry_contents(const FatbinEntry& entry,
                                              DecompressLimits limits = {});

// The PTX text of a PTX entry (its contents up to the first NUL).
Result<std::string> entry_ptx(const FatbinEntry& entry, DecompressLimits limits = {});

// Whether a device of compute capability `device_arch` (e.g. 90) can run the entry: arch-specific
// code (sm_90a) only on exactly its arch, family code (sm_100f) on devices of its family that are
// not older, other code on devices that are not older (PTX by JIT; cubins need the same major
// version, which callers check themselves).
bool runs_on(const FatbinEntry& entry, std::uint32_t device_arch);

// The entry that a device of compute capability `device_arch` (e.g. 90) can JIT: the PTX entry of
// the highest arch that runs_on() it, preferring arch- or family-specific PTX between equal arches.
// nullptr when none.
const FatbinEntry* select_ptx(const Fatbin& fatbin, std::uint32_t device_arch);

// The __fatBinC_Wrapper_t that __cudaRegisterFatBinary receives (fatbinary_section.h).
struct FatbinWrapper {
  std::uint32_t magic = 0;
  std::uint32_t version = 0;  // 1: data is a fatbin; 2: prelinked fatbins (relocatable)
  std::uint64_t data = 0;     // address of the fatbin in the registering process
  std::uint64_t filename_or_fatbins = 0;
};
inline constexpr std::size_t kFatbinWrapperSize = 24;

Result<FatbinWrapper> parse_fatbin_wrapper(Bytes data);

enum class ImageKind { fatbin, fatbin_wrapper, elf, ptx, unknown };
std::string_view to_string(ImageKind kind);

// What a module image is, from its first bytes: the inputs of cuModuleLoadData, cuLibraryLoadData,
// __cudaRegisterFatBinary, or a file.
ImageKind classify_image(Bytes prefix);

// The extent of an image that the caller holds only as a pointer (what the driver API receives).
// Reads the image's own headers to find its size: the fatbin header, the ELF section and program
// header tables, or the NUL that ends PTX text. A wrapper is followed to its fatbin. The memory
// must be readable as far as those headers say, which the driver requires of the caller anyway.
Result<Bytes> image_from_pointer(const void* image);

}  // namespace sluice::ptx
