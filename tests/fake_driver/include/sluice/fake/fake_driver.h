/* Control API of sluice's fake CUDA driver (tests/fake_driver, libcuda.so.1 without a GPU).
 *
 * Tests use it to give kernels a host implementation, to make kernels fail, and to read what the
 * fake device executed and in which order. Everything here is plain C so that tests of any
 * component, and programs that reach the fake only through dlopen/dlsym, can use it.
 *
 * Thread safety: every function may be called from any thread, including from a host kernel.
 * Scope: one process. Processes that share a device (SLUICE_FAKE_GPU_DIR) each see their own
 * trace and counters; timestamps use CLOCK_MONOTONIC, so traces of several processes merge.
 */
#ifndef SLUICE_FAKE_FAKE_DRIVER_H
#define SLUICE_FAKE_FAKE_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when a struct below changes layout. */
#define SLUICE_FAKE_API_VERSION 1

/* ---- host kernels ------------------------------------------------------------------------- */

/* What a host kernel sees of one launch. `params` is the launch's parameter buffer, laid out as
 * cuFuncGetParamInfo describes (param_offsets/param_sizes, param_count entries). */
typedef struct sluice_fake_launch {
  const char* kernel;
  const void* params;
  const size_t* param_offsets;
  const size_t* param_sizes;
  size_t param_count;
  unsigned int grid[3];
  unsigned int block[3];
  unsigned int shared_mem_bytes;
  unsigned int sm_count; /* SMs of the partition the grid runs on */
  int device;
  uint64_t stream_id; /* cuStreamGetId of the stream it runs on */
} sluice_fake_launch;

/* A host kernel runs on the device's executor thread when the grid finishes its modelled device
 * time. It returns 0 (CUDA_SUCCESS) or a CUresult: the kernel then fails like a device fault
 * (sticky: the context is unusable afterwards). It must not call cu* functions. */
typedef int (*sluice_fake_kernel_fn)(const sluice_fake_launch* launch, void* user);

/* Binds `fn` to every kernel named `name` whose module says `op=host`. `duration_ns` is the
 * device time of one launch unless the module line gives duration_us. Registering a name again
 * replaces the earlier binding. Returns 0, or -1 for a null name or function. */
int sluice_fake_register_kernel(const char* name, sluice_fake_kernel_fn fn, void* user,
                                uint64_t duration_ns);
/* Returns 0, or -1 when no kernel of that name is registered. */
int sluice_fake_unregister_kernel(const char* name);

/* ---- failure injection -------------------------------------------------------------------- */

/* The next `count` executions of kernel `name` (launched after this call) fail on the device with
 * `error` (a CUresult other than 0). The launch call itself succeeds; the error surfaces at the
 * next synchronizing call of the context, like a real device fault. Sticky errors (sticky != 0)
 * make every later call of that context fail with `error`, as CUDA_ERROR_ILLEGAL_ADDRESS does;
 * a non-sticky error is returned once, by the next synchronize or query of the context.
 * Returns 0, or -1 for a null name, error 0 or count 0. */
int sluice_fake_fail_kernel(const char* name, int error, int sticky, uint32_t count);
/* Drops every pending injection. */
void sluice_fake_clear_failures(void);

/* ---- execution trace ---------------------------------------------------------------------- */

typedef enum sluice_fake_op_kind {
  SLUICE_FAKE_OP_KERNEL = 1,
  SLUICE_FAKE_OP_COPY = 2,
  SLUICE_FAKE_OP_MEMSET = 3,
  SLUICE_FAKE_OP_EVENT_RECORD = 4,
  SLUICE_FAKE_OP_EVENT_WAIT = 5,
  SLUICE_FAKE_OP_HOST_FUNC = 6,
  SLUICE_FAKE_OP_MEM_WRITE = 7, /* cuStreamWriteValue32/64 and batch writes */
  SLUICE_FAKE_OP_MEM_WAIT = 8,  /* cuStreamWaitValue32/64 and batch waits */
  SLUICE_FAKE_OP_MEM_FREE = 9,  /* the stream-ordered half of cuMemFreeAsync */
  SLUICE_FAKE_OP_MARKER = 10    /* ordering only: graph upload, allocation nodes, barriers */
} sluice_fake_op_kind;

typedef enum sluice_fake_engine {
  SLUICE_FAKE_ENGINE_NONE = 0, /* ran in stream order without occupying an engine */
  SLUICE_FAKE_ENGINE_COMPUTE = 1,
  SLUICE_FAKE_ENGINE_COPY = 2
} sluice_fake_engine;

/* One executed operation. Records appear in the order operations finished. */
typedef struct sluice_fake_trace_record {
  uint64_t seq;        /* position in this process's trace, from 0 */
  uint64_t stream_id;  /* cuStreamGetId */
  uint64_t stream;     /* the CUstream handle as an integer (legacy/per-thread streams: theirs) */
  uint64_t ctx_id;     /* cuCtxGetId of the stream's context */
  uint64_t ticket;     /* the engine ticket taken at call time (0 without an engine) */
  uint64_t tag;        /* kernels: the tag parameter (see README); copies: bytes; memsets: the
                          value; memops: the value; events: cuEventRecord's event handle */
  uint64_t bytes;      /* copies and memsets */
  uint64_t submit_ns;  /* when the application called the driver */
  uint64_t start_ns;   /* when it started on the device */
  uint64_t end_ns;     /* when it finished */
  uint64_t sm_mask[4]; /* kernels: the SMs the grid occupied (bit i = SM i) */
  uint32_t kind;       /* sluice_fake_op_kind */
  uint32_t engine;     /* sluice_fake_engine */
  uint32_t blocks;     /* kernels: blocks in the grid */
  uint32_t sm_count;   /* kernels: SMs in sm_mask */
  int32_t device;
  int32_t result;      /* CUresult the operation finished with */
  uint32_t from_graph; /* 1 when it ran as a node of a graph launch */
  uint32_t reserved;
  char name[64];       /* kernel name, or "memcpy HtoD", "memset", ... */
} sluice_fake_trace_record;

/* Starts or stops recording (SLUICE_FAKE_TRACE=1 starts it at cuInit). */
void sluice_fake_trace_enable(int on);
/* Number of records so far. */
size_t sluice_fake_trace_count(void);
/* Copies up to `max` records starting at index `first` into `out`; returns how many. */
size_t sluice_fake_trace_read(sluice_fake_trace_record* out, size_t first, size_t max);
void sluice_fake_trace_clear(void);

/* ---- counters ----------------------------------------------------------------------------- */

/* Operation counters of this process. "submitted" counts driver calls that enqueued work
 * (graph launches count each node), "executed" operations that finished on the device,
 * "failed" operations that finished with an error or were dropped by a sticky error. */
typedef struct sluice_fake_counters {
  uint64_t api_calls;
  uint64_t launches_submitted;
  uint64_t launches_executed;
  uint64_t launches_failed;
  uint64_t copies_submitted;
  uint64_t copies_executed;
  uint64_t copies_failed;
  uint64_t memsets_submitted;
  uint64_t memsets_executed;
  uint64_t memsets_failed;
  uint64_t host_funcs_submitted;
  uint64_t host_funcs_executed;
  uint64_t event_records;
  uint64_t event_waits;
  uint64_t memops_submitted;
  uint64_t memops_executed;
  uint64_t graph_launches;
  uint64_t captured_ops; /* stream-ordered calls recorded into a graph instead of run */
  uint64_t module_loads;
  uint64_t allocations;
  uint64_t frees;
  uint64_t synchronizations; /* calls that waited for the device */
  uint64_t bytes_copied;
  uint64_t proc_address_queries; /* cuGetProcAddress and _v2 calls */
  uint64_t export_table_queries; /* cuGetExportTable calls (none is answered) */
  uint64_t executor_wakeups;     /* times a device executor woke up (cost of the model itself) */
} sluice_fake_counters;

/* Fills `out`; `size` is sizeof(sluice_fake_counters) as the caller knows it. */
void sluice_fake_counters_get(sluice_fake_counters* out, size_t size);

/* Nanoseconds the calling thread has spent inside the fake driver's entry points (cu* calls
 * since the thread began; the fake's modelled launch cost included). A program whose calls pass
 * through a shim subtracts the difference across a call from the call's time to see what the
 * shim itself took. */
uint64_t sluice_fake_thread_driver_ns(void);

/* Clears the trace, the counters and pending failure injections. Devices, contexts and
 * registered kernels are kept. */
void sluice_fake_reset(void);

/* ---- device state ------------------------------------------------------------------------- */

/* Waits until every stream of every context of this process is empty. Returns 0, or -1 on
 * timeout (timeout_ns 0: wait forever). */
int sluice_fake_wait_idle(uint64_t timeout_ns);

/* 1 when device `ordinal` shares its engines with other processes through SLUICE_FAKE_GPU_DIR,
 * 0 when it is private, -1 before cuInit or for an unknown ordinal. */
int sluice_fake_device_is_shared(int ordinal);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_FAKE_FAKE_DRIVER_H */
