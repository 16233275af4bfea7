// Counts calls of the CUDA driver's launch and copy entry points per process. The loader attaches
// `count_launch` to every launch symbol and `count_copy` to every copy symbol of the driver
// library, for all processes; it reads the `counts` map from user space.
#include <linux/bpf.h>
#include <linux/types.h>

#include <bpf/bpf_helpers.h>

#include "sluice_trace.h"

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SLUICE_TRACE_MAX_PROCESSES);
  __type(key, __u32);
  __type(value, struct sluice_trace_counts);
} counts SEC(".maps");

// Calls not counted because the map was full (one slot: index 0).
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} lost SEC(".maps");

static __always_inline struct sluice_trace_counts* counts_of_current(void) {
  __u32 tgid = (__u32)(bpf_get_current_pid_tgid() >> 32);
  struct sluice_trace_counts* entry = bpf_map_lookup_elem(&counts, &tgid);
  if (entry) return entry;
  struct sluice_trace_counts fresh = {};
  bpf_get_current_comm(fresh.comm, sizeof(fresh.comm));
  // Another thread of the process may insert first: BPF_NOEXIST keeps its entry.
  bpf_map_update_elem(&counts, &tgid, &fresh, BPF_NOEXIST);
  entry = bpf_map_lookup_elem(&counts, &tgid);
  if (!entry) {
    __u32 zero = 0;
    __u64* dropped = bpf_map_lookup_elem(&lost, &zero);
    if (dropped) __sync_fetch_and_add(dropped, 1);
  }
  return entry;
}

static __always_inline int count_call(int is_copy) {
  struct sluice_trace_counts* entry = counts_of_current();
  if (!entry) return 0;
  __sync_fetch_and_add(is_copy ? &entry->copies : &entry->launches, 1);
  return 0;
}

SEC("uprobe")
int count_launch(void* ctx) { return ctx ? count_call(0) : 0; }

SEC("uprobe")
int count_copy(void* ctx) { return ctx ? count_call(1) : 0; }

char LICENSE[] SEC("license") = "Dual BSD/GPL";
