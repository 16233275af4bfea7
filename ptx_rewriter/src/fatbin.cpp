#include "sluice/ptx/fatbin.h"

#include <lz4.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "byte_reader.h"

namespace sluice::ptx {
namespace {

using detail::ByteReader;

// Entry headers beyond this are not something nvcc writes; refusing them bounds the work per entry.
constexpr std::uint32_t kMaxEntryHeaderSize = 4096;
constexpr std::uint32_t kElfMagic = 0x464c457fu;  // "\x7fELF"

Result<FatbinEntry> parse_entry(const ByteReader& in, std::uint64_t at) {
  FatbinEntry entry;
  entry.offset = in.absolute(at);
  SLUICE_PTX_TRY(kind, in.read<std::uint16_t>(at + 0x00, "entry kind"));
  SLUICE_PTX_TRY(header_size, in.read<std::uint32_t>(at + 0x04, "entry header size"));
  SLUICE_PTX_TRY(payload_size, in.read<std::uint64_t>(at + 0x08, "entry payload size"));
  SLUICE_PTX_TRY(compressed_size, in.read<std::uint32_t>(at + 0x10, "entry compressed size"));
  SLUICE_PTX_TRY(minor, in.read<std::uint16_t>(at + 0x18, "entry version minor"));
  SLUICE_PTX_TRY(major, in.read<std::uint16_t>(at + 0x1a, "entry version major"));
  SLUICE_PTX_TRY(arch, in.read<std::uint32_t>(at + 0x1c, "entry arch"));
  SLUICE_PTX_TRY(name_offset, in.read<std::uint32_t>(at + 0x20, "entry name offset"));
  SLUICE_PTX_TRY(name_size, in.read<std::uint32_t>(at + 0x24, "entry name size"));
  SLUICE_PTX_TRY(flags, in.read<std::uint64_t>(at + 0x28, "entry flags"));
  SLUICE_PTX_TRY(uncompressed_size, in.read<std::uint64_t>(at + 0x38, "entry uncompressed size"));

  if (header_size < kFatbinEntryFixedSize || header_size > kMaxEntryHeaderSize) {
    return make_error("offset {:#x}: entry header size {} is outside [{}, {}]", entry.offset,
                      header_size, kFatbinEntryFixedSize, kMaxEntryHeaderSize);
  }
  if (!in.has(at, header_size)) {
    return make_error("offset {:#x}: entry header of {} bytes runs past the end of the input",
                      entry.offset, header_size);
  }
  if (name_size != 0) {
    if (name_offset < kFatbinEntryFixedSize || name_offset > header_size ||
        name_size > header_size - name_offset) {
      return make_error(
          "offset {:#x}: entry name ({} bytes at {:#x}) lies outside its {}-byte header",
          entry.offset, name_size, name_offset, header_size);
    }
    SLUICE_PTX_TRY(name, in.slice(at + name_offset, name_size, "entry name"));
    entry.name.assign(reinterpret_cast<const char*>(name.data()), name.size());
    entry.name.erase(std::find(entry.name.begin(), entry.name.end(), '\0'), entry.name.end());
  }

  const bool lz4 = (flags & kFlagCompressedLz4) != 0;
  const bool zstd = (flags & kFlagCompressedZstd) != 0;
  if (lz4 && zstd) {
    return make_error("offset {:#x}: entry flags {:#x} claim both LZ4 and zstd compression",
                      entry.offset, flags);
  }
  entry.compression = lz4 ? Compression::lz4 : zstd ? Compression::zstd : Compression::none;
  SLUICE_PTX_TRY(payload, in.slice(at + header_size, payload_size, "entry payload"));
  if (entry.compression != Compression::none) {
    if (compressed_size > payload_size) {
      return make_error("offset {:#x}: compressed size {} exceeds the stored payload of {} bytes",
                        entry.offset, compressed_size, payload_size);
    }
    // nvcc always fills compressed_size; an older writer that left it 0 stored exactly the payload.
    if (compressed_size != 0) payload = payload.first(compressed_size);
  }

  entry.kind = kind;
  entry.header_size = header_size;
  entry.payload_offset = in.absolute(at + header_size);
  entry.payload_size = payload_size;
  entry.compressed_size = compressed_size;
  entry.version_major = major;
  entry.version_minor = minor;
  entry.arch = arch;
  entry.flags = flags;
  entry.uncompressed_size = uncompressed_size;
  entry.payload = payload;
  return entry;
}

Result<Fatbin> parse_container(const ByteReader& in, std::uint64_t at) {
  Fatbin fatbin;
  fatbin.offset = in.absolute(at);
  SLUICE_PTX_TRY(magic, in.read<std::uint32_t>(at, "fatbin magic"));
  if (magic != kFatbinMagic) {
    return make_error("offset {:#x}: not a fatbin (magic {:#010x}, expected {:#010x})",
                      fatbin.offset, magic, kFatbinMagic);
  }
  SLUICE_PTX_TRY(version, in.read<std::uint16_t>(at + 4, "fatbin version"));
  SLUICE_PTX_TRY(header_size, in.read<std::uint16_t>(at + 6, "fatbin header size"));
  SLUICE_PTX_TRY(body_size, in.read<std::uint64_t>(at + 8, "fatbin body size"));
  if (header_size < kFatbinHeaderSize) {
    return make_error("offset {:#x}: fatbin header size {} is below {}", fatbin.offset, header_size,
                      kFatbinHeaderSize);
  }
  if (!in.has(at, header_size) || !in.has(at + header_size, body_size)) {
    return make_error(
        "offset {:#x}: fatbin of {} + {} bytes runs past the end of the input ({:#x})",
        fatbin.offset, header_size, body_size, in.absolute(in.size()));
  }
  fatbin.version = version;
  fatbin.size = header_size + body_size;

  // Entries never straddle the container's end: they are read from the container's bytes only.
  SLUICE_PTX_TRY(container_bytes, in.slice(at, fatbin.size, "fatbin"));
  const ByteReader container(container_bytes, in.absolute(at));
  std::uint64_t cursor = header_size;
  while (cursor < fatbin.size) {
    SLUICE_PTX_TRY(entry, parse_entry(container, cursor));
    cursor += entry.header_size + entry.payload_size;
    fatbin.entries.push_back(std::move(entry));
  }
  return fatbin;
}

Result<std::vector<std::byte>> decompress(const FatbinEntry& entry, DecompressLimits limits) {
  if (entry.uncompressed_size > limits.max_bytes) {
    return make_error("offset {:#x}: entry claims {} bytes uncompressed, over the limit of {}",
                      entry.offset, entry.uncompressed_size, limits.max_bytes);
  }
  std::vector<std::byte> out(entry.uncompressed_size);
  if (entry.compression == Compression::zstd) {
    const std::uint64_t frame =
        ZSTD_getFrameContentSize(entry.payload.data(), entry.payload.size());
    if (frame == ZSTD_CONTENTSIZE_ERROR) {
      return make_error("offset {:#x}: payload is not a zstd frame", entry.payload_offset);
    }
    if (frame != ZSTD_CONTENTSIZE_UNKNOWN && frame != entry.uncompressed_size) {
      return make_error("offset {:#x}: zstd frame holds {} bytes, the entry header says {}",
                        entry.payload_offset, frame, entry.uncompressed_size);
    }
    const std::size_t got =
        ZSTD_decompress(out.data(), out.size(), entry.payload.data(), entry.payload.size());
    if (ZSTD_isError(got)) {
      return make_error("offset {:#x}: zstd: {}", entry.payload_offset, ZSTD_getErrorName(got));
    }
    if (got != out.size()) {
      return make_error("offset {:#x}: zstd produced {} bytes, the entry header says {}",
                        entry.payload_offset, got, out.size());
    }
    return out;
  }
  // LZ4: a raw block (no frame header), decompressed size from the entry header.
  if (entry.payload.size() > static_cast<std::uint64_t>(LZ4_MAX_INPUT_SIZE) ||
      out.size() > static_cast<std::uint64_t>(LZ4_MAX_INPUT_SIZE) * 255) {
    return make_error("offset {:#x}: LZ4 payload of {} bytes is too large", entry.payload_offset,
                      entry.payload.size());
  }
  const int got = LZ4_decompress_safe(
      reinterpret_cast<const char*>(entry.payload.data()), reinterpret_cast<char*>(out.data()),
      static_cast<int>(entry.payload.size()),
      static_cast<int>(std::min<std::uint64_t>(out.size(), INT32_MAX)));
  if (got < 0) {
    return make_error("offset {:#x}: LZ4 block is corrupt (error {})", entry.payload_offset, got);
  }
  if (static_cast<std::uint64_t>(got) != out.size()) {
    return make_error("offset {:#x}: LZ4 produced {} bytes, the entry header says {}",
                      entry.payload_offset, got, out.size());
  }
  return out;
}

// Arch families as the driver defines them for compute_NNNf PTX: same major version, not older.
bool same_family(std::uint32_t ptx_arch, std::uint32_t device_arch) {
  return ptx_arch / 10 == device_arch / 10 && device_arch >= ptx_arch;
}

}  // namespace

std::string_view to_string(Compression compression) {
  switch (compression) {
    case Compression::none:
      return "none";
    case Compression::lz4:
      return "lz4";
    case Compression::zstd:
      return "zstd";
  }
  return "?";
}

std::string_view FatbinEntry::kind_name() const {
  if (is_ptx()) return "ptx";
  if (is_elf()) return "elf";
  return "unknown";
}

std::string FatbinEntry::arch_name() const {
  std::string suffix = (flags & kFlagArchSpecific) != 0     ? "a"
                       : (flags & kFlagFamilySpecific) != 0 ? "f"
                                                            : "";
  return fmt::format("{}_{}{}", is_ptx() ? "compute" : "sm", arch, suffix);
}

std::uint64_t FatbinEntry::content_size() const {
  return compression == Compression::none ? payload.size() : uncompressed_size;
}

Result<Fatbin> parse_fatbin(Bytes data) {
  return parse_container(ByteReader(data, 0), 0);
}

Result<std::vector<Fatbin>> parse_fatbins(Bytes data, std::uint64_t base_offset) {
  ByteReader in(data, base_offset);
  std::vector<Fatbin> fatbins;
  std::uint64_t cursor = 0;
  while (cursor < data.size()) {
    // Sections pad containers to their alignment with zeros.
    if (data[cursor] == std::byte{0}) {
      ++cursor;
      continue;
    }
    SLUICE_PTX_TRY(fatbin, parse_container(in, cursor));
    cursor += fatbin.size;
    fatbins.push_back(std::move(fatbin));
  }
  return fatbins;
}

Result<std::vector<std::byte>> entry_contents(const FatbinEntry& entry, DecompressLimits limits) {
  if (entry.compression == Compression::none) {
    return std::vector<std::byte>(entry.payload.begin(), entry.payload.end());
  }
  return decompress(entry, limits);
}

Result<std::string> entry_ptx(const FatbinEntry& entry, DecompressLimits limits) {
  if (!entry.is_ptx()) {
    return make_error("offset {:#x}: entry is {} code, not PTX", entry.offset, entry.kind_name());
  }
  SLUICE_PTX_TRY(contents, entry_contents(entry, limits));
  std::string text(reinterpret_cast<const char*>(contents.data()), contents.size());
  text.erase(std::find(text.begin(), text.end(), '\0'), text.end());
  return text;
}

bool runs_on(const FatbinEntry& entry, std::uint32_t device_arch) {
  if ((entry.flags & kFlagArchSpecific) != 0) return entry.arch == device_arch;
  if ((entry.flags & kFlagFamilySpecific) != 0) return same_family(entry.arch, device_arch);
  return entry.arch <= device_arch;
}

const FatbinEntry* select_ptx(const Fatbin& fatbin, std::uint32_t device_arch) {
  const FatbinEntry* best = nullptr;
  for (const FatbinEntry& entry : fatbin.entries) {
    if (!entry.is_ptx() || !runs_on(entry, device_arch)) continue;
    // Prefer the newest PTX; between equal arches the arch- or family-specific one.
    const bool better = best == nullptr || entry.arch > best->arch ||
                        (entry.arch == best->arch && entry.flags > best->flags);
    if (better) best = &entry;
  }
  return best;
}

Result<FatbinWrapper> parse_fatbin_wrapper(Bytes data) {
  ByteReader in(data, 0);
  FatbinWrapper wrapper;
  SLUICE_PTX_TRY(magic, in.read<std::uint32_t>(0, "wrapper magic"));
  if (magic != kFatbinWrapperMagic) {
    return make_error("offset 0x0: not a fatbin wrapper (magic {:#010x}, expected {:#010x})", magic,
                      kFatbinWrapperMagic);
  }
  SLUICE_PTX_TRY(version, in.read<std::uint32_t>(4, "wrapper version"));
  SLUICE_PTX_TRY(address, in.read<std::uint64_t>(8, "wrapper data pointer"));
  SLUICE_PTX_TRY(extra, in.read<std::uint64_t>(16, "wrapper filename_or_fatbins"));
  if (version != 1 && version != 2) {
    return make_error("offset 0x4: fatbin wrapper version {} (expected 1 or 2)", version);
  }
  wrapper.magic = magic;
  wrapper.version = version;
  wrapper.data = address;
  wrapper.filename_or_fatbins = extra;
  return wrapper;
}

std::string_view to_string(ImageKind kind) {
  switch (kind) {
    case ImageKind::fatbin:
      return "fatbin";
    case ImageKind::fatbin_wrapper:
      return "fatbin-wrapper";
    case ImageKind::elf:
      return "elf";
    case ImageKind::ptx:
      return "ptx";
    case ImageKind::unknown:
      return "unknown";
  }
  return "?";
}

ImageKind classify_image(Bytes prefix) {
  ByteReader in(prefix, 0);
  if (auto magic = in.read<std::uint32_t>(0, "magic")) {
    if (*magic == kFatbinMagic) return ImageKind::fatbin;
    if (*magic == kFatbinWrapperMagic) return ImageKind::fatbin_wrapper;
    if (*magic == kElfMagic) return ImageKind::elf;
  }
  // PTX is text: skip leading whitespace and comments' first character, then expect a directive or
  // a comment. Binary data almost never starts like that.
  for (std::byte b : prefix) {
    const char c = static_cast<char>(b);
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    return c == '.' || c == '/' ? ImageKind::ptx : ImageKind::unknown;
  }
  return ImageKind::unknown;
}

Result<Bytes> image_from_pointer(const void* image) {
  if (image == nullptr) return make_error("image pointer is null");
  const auto* bytes = static_cast<const std::byte*>(image);
  // Read the headers piece by piece: only what each header says exists is touched.
  auto load = [&]<typename T>(std::size_t offset, T value) {
    std::memcpy(&value, bytes + offset, sizeof value);
    return value;
  };
  auto u16_at = [&](std::size_t offset) { return load(offset, std::uint16_t{}); };
  auto u32_at = [&](std::size_t offset) { return load(offset, std::uint32_t{}); };
  auto u64_at = [&](std::size_t offset) { return load(offset, std::uint64_t{}); };
  // Compare magics byte by byte, so a short PTX string is never read past its NUL.
  auto starts_with = [&](std::uint32_t magic) {
    for (std::size_t i = 0; i < 4; ++i) {
      if (bytes[i] != static_cast<std::byte>((magic >> (8 * i)) & 0xff)) return false;
    }
    return true;
  };
  const bool wrapper = starts_with(kFatbinWrapperMagic);
  const bool fatbin = starts_with(kFatbinMagic);
  const bool elf = starts_with(kElfMagic);
  if (!wrapper && !fatbin && !elf) {
    return Bytes(bytes, std::strlen(reinterpret_cast<const char*>(bytes)));
  }
  if (wrapper) {
    const std::uint64_t data = u64_at(8);
    if (data == 0) return make_error("fatbin wrapper at {} has a null data pointer", image);
    return image_from_pointer(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(data)));
  }
  if (fatbin) {
    const std::uint16_t header_size = u16_at(6);
    return Bytes(bytes, header_size + u64_at(8));
  }
  {
    // ELF64: the file ends at the furthest of the section header table, the program header table,
    // and the sections themselves.
    const std::uint64_t phoff = u64_at(0x20);
    const std::uint64_t shoff = u64_at(0x28);
    const std::uint16_t phentsize = u16_at(0x36);
    const std::uint16_t phnum = u16_at(0x38);
    const std::uint16_t shentsize = u16_at(0x3a);
    const std::uint16_t shnum = u16_at(0x3c);
    std::uint64_t end = std::max<std::uint64_t>(64, phoff + std::uint64_t{phentsize} * phnum);
    end = std::max(end, shoff + std::uint64_t{shentsize} * shnum);
    for (std::uint16_t i = 0; i < shnum && shentsize >= 64; ++i) {
      const std::size_t header = shoff + std::size_t{i} * shentsize;
      const std::uint32_t type = u32_at(header + 4);
      if (type == 8) continue;  // SHT_NOBITS occupies no file space
      end = std::max(end, u64_at(header + 0x18) + u64_at(header + 0x20));
    }
    return Bytes(bytes, end);
  }
}

}  // namespace sluice::ptx
