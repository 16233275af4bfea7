// The record shared by sluice_trace.bpf.c and the loader: per-process counts of driver entry
// points, kept in the BPF hash map `counts` keyed by the process id (tgid).
#ifndef SLUICE_TRACE_H
#define SLUICE_TRACE_H

#define SLUICE_TRACE_COMM_LEN 16
// Processes the map holds. A process that calls the driver once takes an entry for the
// tracer's lifetime; past this many, new processes are counted in `lost` only.
#define SLUICE_TRACE_MAX_PROCESSES 65536

struct sluice_trace_counts {
  unsigned long long launches;  // kernel and graph launches
  unsigned long long copies;    // memory copies, synchronous and asynchronous
  char comm[SLUICE_TRACE_COMM_LEN];  // the calling thread's name when the process was first seen
};

#endif
