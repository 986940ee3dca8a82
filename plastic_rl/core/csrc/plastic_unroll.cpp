// The fused unroll of the plastic recurrent layer: forward and hand-written backward over a whole sequence.
//
// Built on first use by plastic_rl/core/fused.py (torch.utils.cpp_extension); the math, the buffer layout and the
// checkpoint plan are documented there, and plastic_rl/core/fused.py holds a PyTorch implementation of the same two
// functions that this file must agree with.
//
// Performance notes. Each step is one pass over the B x N x N trace: the trace update of the previous step is done
// lazily, fused with the plastic matrix-vector product of this step, so the trace is read and written once per step
// forward and (with its gradient) once per step backward. A batch is cut into slices (see run() below) that threads
// unroll independently, with no synchronisation between steps. Within an unroll, rows (presynaptic neurons) are
// contiguous memory in every batch element; they go in blocks of about kBlockElements, and within a block the batch
// is the inner loop, so that the block of w, alpha and dL/dalpha is read from memory once per step for the whole
// slice and stays in cache while the slice runs through it. A single episode (B = 1) is instead shared by the
// threads step by step: each takes groups of rows, and column sums are reduced across groups after each pass
// (N per group: small). A rollout, which runs one step per call, runs each step's pass over the trace on background
// threads while the caller steps its envs (ForwardWorker; the pass does not need the step's drive).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef __AVX2__
#include <immintrin.h>
#endif
#if defined(__AVX2__) && defined(__GLIBC__)
#include <dlfcn.h>
#define PLASTIC_RL_VECTOR_TANH 1
#endif

namespace {

enum Plasticity { kNone = 0, kShared = 1, kFull = 2 };
// The codes of the rules this kernel runs: the kernel_code of their DecayForm in plastic_rl/core/rules.py.
// kNeuromod: H <- H + pre (M(t) post)^T, M(t) the network's neuromodulator (Backpropamine's simple neuromodulation);
// kRetroneuromod: H <- H + M(t) E, then E <- (1 - eta) E + eta pre post^T (retroactive, with an eligibility trace).
enum Rule { kHebb = 0, kOja = 1, kNeuromod = 2, kRetroneuromod = 3 };
// A forward call runs whole steps, or one of their two parts: the product (the pass over the trace: the pending
// update and the plastic product, summed into the step's outputs before the drive) and the activation (the drive
// added, tanh). A rollout runs the product of step t + 1 in the background while the env steps on step t's actions
// (ForwardWorker); the product does not depend on the drive. kRedoResets redoes the product of the batch elements
// that turn out to start an episode at the step (the background product assumed none did).
enum Phase { kWholeSteps = 0, kProduct = 1, kActivation = 2, kRedoResets = 3 };
constexpr int64_t kBlockElements = 4096;
constexpr int64_t kGroups = 8;
// Below this many trace elements per parallel section, waking the other threads costs more than it saves.
constexpr int64_t kParallelWork = 1 << 14;

struct Sizes {
  int64_t T, B, N;
  int64_t K;       // outputs of the neuromodulator head M(t): 1 or N (0: a rule without one)
  int64_t every;   // checkpoint spacing K
  int64_t stride;  // the batch size of the buffers: B, or more when this call runs one slice of the batch
  bool sliced;     // one slice of a batch split across threads: run single-threaded, in one row group
  // The steps a forward call runs (a rollout runs one per call): the products of steps [first, last); `pending`: the
  // trace update of step first - 1 is still to be done (the previous call left it, to fuse it with this call's
  // product); `settle`: do the update of step last - 1 before returning, else leave it pending. A whole unroll is
  // [0, T), not pending, settled.
  int64_t first = 0, last = 0;
  bool pending = false, settle = true;
  int64_t phase = 0;  // a Phase: which part of the steps a forward call runs
  int64_t time_stride() const { return stride * N; }      // between steps of a (T, B, N) buffer
  int64_t modulation_stride() const { return stride * K; }  // between steps of the (T, B, K) M(t)
  int64_t slot_stride() const { return stride * N * N; }  // between the traces of a (K, B, N, N) buffer
  int64_t flag_bytes() const { return (N + 7) / 8; }      // a row of clip flags: one bit per trace element
  int64_t flag_stride() const { return stride * N * flag_bytes(); }  // between the segments of the clip flags
};

inline void spin_pause(int64_t& spins) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
  if (++spins % 1024 == 0) std::this_thread::yield();  // more threads than free cores: let the others run
}

// Returns once unchanged() is false: spinning at first (a thread that spins reacts in a cache-line handoff), then,
// after `idle`, asleep on `wake` (notified under `mutex` by whoever changes it, when `sleepers` says one sleeps).
template <typename Unchanged>
void await_change(const Unchanged& unchanged, std::chrono::steady_clock::duration idle, std::mutex& mutex,
                  std::condition_variable& wake, std::atomic<int64_t>& sleepers) {
  int64_t spins = 0;
  std::chrono::steady_clock::time_point start;
  while (unchanged()) {
    spin_pause(spins);
    if (spins % 1024 != 0) continue;
    if (spins == 1024) start = std::chrono::steady_clock::now();
    if (std::chrono::steady_clock::now() - start < idle) continue;
    std::unique_lock<std::mutex> lock(mutex);
    sleepers.fetch_add(1);
    wake.wait(lock, [&] { return !unchanged(); });
    sleepers.fetch_sub(1);
  }
}

// The threads of one unroll. Member 0 runs the unroll; the others spin, from the first step to the last, waiting
// for the parallel sections it posts. A section then costs a few cache-line handoffs, where an OpenMP
// region per section (two per step) costs a fork and a join, and more whenever a waiting thread has gone to sleep.
// Measured on the 2-core development VM at N = 200, T = 250, B = 1: one thread 0.0092 s per episode; two threads
// with a region per section 0.011-0.014 s; two threads in a team 0.0067-0.0071 s.
//
// On a busy machine (more runnable threads than cores) any member may lose its core for a whole time slice, and
// a scheme that needs every member at every step then runs many times slower than one thread. So: a member joins a
// section only while it is open; member 0 closes it when its own share is done (sections hand out their work
// dynamically, so by then all of it is taken) and waits only for the members that joined. When that wait is long
// all the same (a joined member was descheduled), member 0 runs the next sections alone. Members that find nothing
// to do for a while sleep instead of spinning, so that they do not take cores from busier threads.
// Measured beside two busy processes at N = 1,001, T = 200, B = 1: 0.30-0.33 s per episode on two threads, where
// a team that waited for every member took 0.33-1.2 s, and one thread 0.31-0.41 s.
class Team {
 public:
  // body() on member 0 and on every member that joins in time; returns when all of those have finished.
  // Member 0 only. body must hand out its work dynamically: any member may do any part of it, or none.
  template <typename F>
  void parallel(const F& body) {
    if (alone_ > 0) {
      --alone_;
      body();
      return;
    }
    body_ = &body;
    invoke_ = [](const void* f) { (*static_cast<const F*>(f))(); };
    finished_.store(0, std::memory_order_relaxed);
    post(generation_ += kGeneration, kOpen);
    body();
    const int64_t joined = state_.fetch_and(~kOpen, std::memory_order_acq_rel) & kJoined;
    if (finished_.load(std::memory_order_acquire) == joined) return;
    const auto start = Clock::now();
    for (int64_t spins = 0; finished_.load(std::memory_order_acquire) != joined;) {
      spin_pause(spins);
      if (spins % 64 == 0 && alone_ == 0 && Clock::now() - start > kPatience) alone_ = kSectionsAlone;
    }
  }

  // The loop of members 1, 2, ...: join each posted section that is still open, until stop().
  void serve() {
    for (int64_t seen = 0;;) {
      const int64_t state = await(seen);
      if (state & kStopped) return;
      seen = state & kGenerationBits;
      if (join(state, seen)) {
        invoke_(body_);
        finished_.fetch_add(1, std::memory_order_release);
      }
    }
  }

  void stop() { post(generation_ + kGeneration, kStopped); }

 private:
  using Clock = std::chrono::steady_clock;
  // state_: the section's generation, whether it is open, and how many members joined it
  static constexpr int64_t kJoined = (1 << 16) - 1, kOpen = 1 << 16, kStopped = 1 << 17, kGeneration = 1 << 18;
  static constexpr int64_t kGenerationBits = ~(kJoined | kOpen);
  // A section takes microseconds; a wait this long means a member lost its core.
  static constexpr auto kPatience = std::chrono::microseconds(200);
  static constexpr int64_t kSectionsAlone = 64;
  // Longer than a step at the largest sizes (N = 1,001: 0.6 ms), so that members sleep only when member 0 runs alone
  // or has lost its core.
  static constexpr auto kIdleBeforeSleep = std::chrono::milliseconds(2);

  void post(int64_t generation, int64_t flags) {
    state_.store(generation | flags);
    if (sleepers_.load() > 0) {
      // Taking the mutex orders this with a sleeper's last look at state_: it either saw the new state or waits.
      {
        std::lock_guard<std::mutex> lock(mutex_);
      }
      wake_.notify_all();
    }
  }

  // The state of the first section after `seen` (or the stop).
  int64_t await(int64_t seen) {
    int64_t state = 0;
    await_change(
        // Sequentially consistent, as post()'s store and load are: with an acquire load here, the poster's look at
        // sleepers_ and this look at state_ may both miss the other's write (not on x86; allowed on AArch64), and a
        // member would sleep through the section or the stop.
        [&] { return ((state = state_.load()) & kGenerationBits) == seen; },
        kIdleBeforeSleep, mutex_, wake_, sleepers_);
    return state;
  }

  // Joins the section of generation `seen` if it is still open.
  bool join(int64_t state, int64_t seen) {
    while ((state & kOpen) && (state & kGenerationBits) == seen)
      if (state_.compare_exchange_weak(state, state + 1, std::memory_order_acquire)) return true;
    return false;
  }

  int64_t generation_ = 0, alone_ = 0;
  const void* body_ = nullptr;
  void (*invoke_)(const void*) = nullptr;
  std::atomic<int64_t> state_{0}, finished_{0}, sleepers_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
};

// main(team) on this thread, with `threads - 1` more serving the team's sections (team is nullptr for one thread).
template <typename Main>
void with_team(int64_t threads, Main&& main) {
#ifdef _OPENMP
  if (threads > 1 && !omp_in_parallel()) {
    Team team;
#pragma omp parallel num_threads(threads)
    {
      const bool complete = omp_get_num_threads() == threads;  // else run on member 0 alone
      if (omp_get_thread_num() == 0) {
        main(complete ? &team : nullptr);
        if (complete) team.stop();
      } else if (complete) {
        team.serve();
      }
    }
    return;
  }
#endif
  main(nullptr);
}

// Rows (presynaptic neurons) in a fixed number of groups, each with its own partial sums, reduced in group order:
// results do not depend on the number of threads or on which thread ran which group. Threads take groups
// dynamically, so that a thread the OS has descheduled (a busy machine) does not hold up the step.
struct Rows {
  int64_t count, n, block, threads;
  Team* team = nullptr;  // set inside with_team
  Rows(int64_t n_, int64_t work_per_step, bool sliced) : n(n_) {
    count = sliced ? 1 : std::min({kGroups, std::max<int64_t>(1, work_per_step / 8192), n});
    // Not asked of torch in a slice: a slice may run on a ForwardWorker's thread, where torch's first
    // get_num_threads() sets the process's thread count to its default.
    threads = sliced || work_per_step < kParallelWork ? 1 : std::min<int64_t>(count, at::get_num_threads());
    block = std::max<int64_t>(1, kBlockElements / n);
  }
  int64_t begin(int64_t c) const { return c * n / count; }
  int64_t end(int64_t c) const { return (c + 1) * n / count; }
  // body(c) once for every group c
  template <typename F>
  void run(F&& body) const {
    if (!team) {
      for (int64_t c = 0; c < count; ++c) body(c);
      return;
    }
    each(count, body);
  }
  // body(first, last) over fixed blocks [0, blocks), split between the threads where there are enough
  template <typename F>
  void run_blocks(int64_t blocks, F&& body) const {
    if (!team || blocks < 4) {
      body(0, blocks);
      return;
    }
    each(blocks, [&](int64_t k) { body(k, k + 1); });
  }
  // body(k) once for every k in [0, count), on the team, taken dynamically
  template <typename F>
  void each(int64_t count, F&& body) const {
    std::atomic<int64_t> next{0};
    team->parallel([&] {
      for (int64_t k; (k = next.fetch_add(1)) < count;) body(k);
    });
  }
  // body(i, b) over the rows of group c, block by block, the batch inside a block
  template <typename F>
  void blocks(int64_t c, int64_t batch, F&& body) const {
    for (int64_t i0 = begin(c); i0 < end(c); i0 += block) {
      const int64_t i1 = std::min(end(c), i0 + block);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t i = i0; i < i1; ++i) body(i, b);
    }
  }
};

constexpr int64_t kActivationBlock = 1024;

#ifdef PLASTIC_RL_VECTOR_TANH
// glibc's vector math library (2.35 on) has an 8-wide AVX2 tanhf, within 1 ulp of the correctly rounded tanh (checked
// on every 7th float; scalar tanhf: 2 ulp). It is looked up at run time so that neither the build nor the import
// depends on it; std::tanh where it is missing.
using VectorTanh = __m256 (*)(__m256);
VectorTanh vector_tanhf() {
  static const VectorTanh function = [] {
    void* library = dlopen("libmvec.so.1", RTLD_LAZY | RTLD_LOCAL);
    return library ? reinterpret_cast<VectorTanh>(dlsym(library, "_ZGVdN8v_tanhf")) : nullptr;
  }();
  return function;
}
#endif

template <typename S>
void tanh_in_place(S* x, int64_t n) {
  int64_t k = 0;
#ifdef PLASTIC_RL_VECTOR_TANH
  if constexpr (std::is_same_v<S, float>) {
    if (const auto vector_tanh = vector_tanhf())
      for (; k + 8 <= n; k += 8) _mm256_storeu_ps(x + k, vector_tanh(_mm256_loadu_ps(x + k)));
  }
#endif
  for (; k < n; ++k) x[k] = std::tanh(x[k]);
}

template <typename S, bool CLIP>
inline S clip_value(S u, S clip) {
  if constexpr (CLIP) {
    return u > clip ? clip : (u < -clip ? -clip : u);
  } else {
    return u;
  }
}

// The decaying trace (H, or E for kRetroneuromod) steps as ``u = h * decay_j + (gain * pre_i) * post_j``: decay_j =
// 1 - eta (Hebb, and E of kRetroneuromod), 1 - eta post_j^2 (Oja), 1 (kNeuromod, whose gain is 1 and whose post is
// M(t) post: see effective_post).
template <typename S, int RULE>
struct Decay {
  S scalar;
  const S* vector;
  inline S operator[](int64_t j) const {
    if constexpr (RULE == kOja) {
      return vector[j];
    } else {
      return scalar;
    }
  }
  Decay offset(int64_t k) const { return {scalar, vector ? vector + k : nullptr}; }
};

template <typename S, int RULE>
Decay<S, RULE> make_decay(const S* post, S eta, int64_t count, std::vector<S>& storage, bool inverse) {
  if constexpr (RULE == kNeuromod) {
    return {S(1), nullptr};
  } else if constexpr (RULE != kOja) {
    return {inverse ? S(1) / (S(1) - eta) : S(1) - eta, nullptr};
  } else {
    storage.resize(count);
    for (int64_t k = 0; k < count; ++k) {
      const S d = S(1) - eta * post[k] * post[k];
      storage[k] = inverse ? S(1) / d : d;
    }
    return {S(0), storage.data()};
  }
}

template <typename S, int RULE>
constexpr bool kModulated = RULE == kNeuromod || RULE == kRetroneuromod;

// One element of the decaying trace's update: ``value * decay + (gain * pre_i) * post_j`` (H, or a gated rule's E).
template <typename S>
inline S decayed(S value, S decay, S ex, S post) {
  return value * decay + ex * post;
}

// One element of the Hebbian trace's update, clipped: decaying, or kRetroneuromod's ``h + M e`` (``e`` before its own
// update). Every loop that steps or rebuilds the trace forward goes through these two.
template <typename S, int RULE, bool CLIP>
inline S updated_hebbian(S h, S e, S decay, S ex, S post, S m, S clip) {
  if constexpr (RULE == kRetroneuromod) {
    return clip_value<S, CLIP>(h + m * e, clip);
  } else {
    return clip_value<S, CLIP>(decayed(h, decay, ex, post), clip);
  }
}

// The gain of the decaying trace's outer product: eta, or 1 for kNeuromod (M(t) is in its effective post).
template <typename S, int RULE>
inline S gain_of(S eta) {
  return RULE == kNeuromod ? S(1) : eta;
}

// M(t) of every episode for each column (post-synaptic neuron) of its trace, (B, N): M(t) itself where it has a
// value per neuron, else each episode's one value repeated (into storage), so that the row loops read a plain vector.
template <typename S>
const S* column_modulation(const Sizes& z, const S* modulation, std::vector<S>& storage) {
  if (z.K == z.N) return modulation;
  storage.resize(z.B * z.N);
  for (int64_t b = 0; b < z.B; ++b) std::fill_n(storage.data() + b * z.N, z.N, modulation[b]);
  return storage.data();
}

// The post-synaptic vector of the decaying trace's update: y_t, or M(t) y_t for kNeuromod (into storage), with
// ``columns`` M(t) per column (column_modulation).
template <typename S, int RULE>
const S* effective_post(const Sizes& z, const S* y, const S* columns, std::vector<S>& storage) {
  if constexpr (RULE != kNeuromod) {
    return y;
  } else {
    storage.resize(z.B * z.N);
    for (int64_t k = 0; k < z.B * z.N; ++k) storage[k] = columns[k] * y[k];
    return storage.data();
  }
}

// M(t) = tanh(y_t w_M + b_M) of every episode, (B, K), with w_M (N, K).
template <typename S>
void modulation_of(const Sizes& z, const S* y, const S* weight, const S* bias, S* modulation) {
  for (int64_t b = 0; b < z.B; ++b) {
    S* m = modulation + b * z.K;
    std::copy(bias, bias + z.K, m);
    for (int64_t i = 0; i < z.N; ++i) {
      const S yi = y[b * z.N + i];
      const S* __restrict w = weight + i * z.K;
      for (int64_t k = 0; k < z.K; ++k) m[k] += yi * w[k];
    }
    tanh_in_place(m, z.K);
  }
}

// The buffers of a neuromodulated rule: the head and M(t), and a gated rule's eligibility trace E, kept as the
// Hebbian trace is (initial, running or final, checkpoints, before resets, its gradient, its backward workspace).
template <typename S>
struct Modulated {
  const S* weight = nullptr;  // w_M (N, K)
  const S* bias = nullptr;    // b_M (K)
  S* modulation = nullptr;    // M(t), (T, B, K)
  const S* e0 = nullptr;
  S* eligibility = nullptr;
  S* checkpoints = nullptr;
  S* pre_reset = nullptr;
  S* grad_eligibility = nullptr;
  S* grad_modulation = nullptr;  // dL/dz_t of M(t) = tanh(z_t), (T, B, K)
  S* workspace = nullptr;
};

// A clipped trace rebuilt in reverse (CheckpointPlan.flags_clipping in plastic_rl/core/fused/plan.py): the forward
// flags, per segment of `every` updates (the updates of steps [s K, s K + K), whose backward one checkpoint serves),
// each trace element that one of them left on the clip, a bit per element (Sizes::flag_bytes per row); the backward
// recomputes the rows that have flagged elements forward from the segment's checkpoint (recompute_flagged), keeps
// the flagged elements' values, and inverts the update of all others, which the clip never touched there. An element
// that lands on the bound unclipped is flagged too, harmlessly. ``value`` is a row just written (in L1).
template <typename S>
inline void flag_clipped(uint8_t* __restrict flags, const S* __restrict value, int64_t n, S clip) {
  int64_t j = 0;
#ifdef __AVX2__
  if constexpr (std::is_same_v<S, float>) {  // GCC leaves the portable loop scalar: about 1 ns per element
    const __m256 bound = _mm256_set1_ps(clip), sign = _mm256_set1_ps(-0.0f);
    for (; j + 8 <= n; j += 8) {
      const __m256 magnitude = _mm256_andnot_ps(sign, _mm256_loadu_ps(value + j));
      flags[j / 8] |= static_cast<uint8_t>(_mm256_movemask_ps(_mm256_cmp_ps(magnitude, bound, _CMP_GE_OQ)));
    }
  }
#endif
  for (; j < n; ++j)
    if (std::abs(value[j]) >= clip) flags[j / 8] |= static_cast<uint8_t>(1u << (j % 8));
}

template <typename S, int MODE, int RULE, bool CLIP>
void forward_kernel(const Sizes& z, const S* drive, const S* x0, const S* h0, const S* weight, const S* alpha,
                    const S* bias, const bool* starts, const S* reset_activation, S eta, S clip, bool clamp_input,
                    bool bias_neuron, S* outputs, S* pre, S* plastic_part, S* trace, S* checkpoints, S* pre_reset,
                    const int64_t* pre_reset_index, uint8_t* clip_flags, const Modulated<S>& mod) {
  const int64_t B = z.B, N = z.N, BN = B * N, NN = N * N, TS = z.time_stride(), SB = z.stride;
  const S shared_alpha = MODE == kShared ? alpha[0] : S(0), gain = gain_of<S, RULE>(eta);
  Rows rows(N, (MODE == kNone ? 1 : B) * NN, z.sliced);
  const int64_t C = rows.count;
  std::vector<S> acc(C * BN), acc_plastic(MODE == kShared ? C * BN : 0), decay_storage, post_storage,
      column_storage;
  with_team(rows.threads, [&](Team* team) {
    rows.team = team;
    const bool product = z.phase != kActivation, activation = z.phase != kProduct;
    for (int64_t t = z.first; t <= z.last; ++t) {
      // the (lazy) trace update of step t - 1
      const bool update =
          product && MODE != kNone && t >= 1 && (t > z.first || z.pending) && (t < z.last || z.settle);
      const bool matvec = t < z.last;
      if (!update && !matvec) break;
      S* x = matvec && product ? pre + t * TS : nullptr;
      if (x) {
        for (int64_t b = 0; b < B; ++b) {
          const bool reset = t > 0 && starts && starts[t * SB + b];
          const S* source = t == 0 ? x0 + b * N : (reset ? reset_activation : outputs + (t - 1) * TS + b * N);
          std::copy(source, source + N, x + b * N);
        }
      }
      const S* x_prev = update ? pre + (t - 1) * TS : nullptr;
      const S* m_prev = update && kModulated<S, RULE>
                            ? column_modulation(z, mod.modulation + (t - 1) * z.modulation_stride(), column_storage)
                            : nullptr;
      const S* y_prev = update ? effective_post<S, RULE>(z, outputs + (t - 1) * TS, m_prev, post_storage) : nullptr;
      Decay<S, RULE> decay{};
      if (update) decay = make_decay<S, RULE>(y_prev, eta, BN, decay_storage, false);
      uint8_t* flags = CLIP && update && clip_flags ? clip_flags + (t - 1) / z.every * z.flag_stride() : nullptr;
      const int64_t FB = z.flag_bytes();
      const bool checkpointed = product && MODE != kNone && matvec && t > 0 && t % z.every == 0;
      S* checkpoint = checkpointed ? checkpoints + (t / z.every - 1) * z.slot_stride() : nullptr;
      S* e_checkpoint = checkpointed && RULE == kRetroneuromod ? mod.checkpoints + (t / z.every - 1) * z.slot_stride()
                                                              : nullptr;
      if (product) rows.run([&](int64_t c) {
        S* acc_c = acc.data() + c * BN;
        S* plastic_c = MODE == kShared ? acc_plastic.data() + c * BN : nullptr;
        if (matvec) {
          std::fill_n(acc_c, BN, S(0));
          if constexpr (MODE == kShared) std::fill_n(plastic_c, BN, S(0));
        }
        rows.blocks(c, B, [&](int64_t i, int64_t b) {
          const S* __restrict w = weight + i * N;
          S* __restrict out = acc_c + b * N;
          const S xi = matvec ? x[b * N + i] : S(0);
          if constexpr (MODE == kNone) {
            for (int64_t j = 0; j < N; ++j) out[j] += xi * w[j];
          } else {
            const S* __restrict a = MODE == kFull ? alpha + i * N : nullptr;
            const int64_t row = b * NN + i * N;
            S* __restrict h = trace + row;
            // a gated rule's eligibility trace, stepped beside H: H <- clip(H + M E), E <- E decay + eta x y^T
            S* __restrict e = RULE == kRetroneuromod ? mod.eligibility + row : nullptr;
            const bool reset = matvec && t > 0 && starts && starts[t * SB + b];
            bool fused_matvec = false;
            if (update) {
              const S ex = gain * x_prev[b * N + i];
              const S* __restrict y = y_prev + b * N;
              const auto d = decay.offset(RULE == kOja ? b * N : 0);
              const S* __restrict m = RULE == kRetroneuromod ? m_prev + b * N : nullptr;
              constexpr bool gated = RULE == kRetroneuromod;
              // The element's new H, and a gated rule's E stepped in place (or into ``e_out``).
              auto element = [&](int64_t j, S* e_out) {
                const S ej = gated ? e[j] : S(0);
                if constexpr (gated) e_out[j] = decayed(ej, d[j], ex, y[j]);
                return updated_hebbian<S, RULE, CLIP>(h[j], ej, d[j], ex, y[j], gated ? m[j] : S(0), clip);
              };
              if (reset) {
                const int64_t slot = pre_reset_index ? pre_reset_index[t * SB + b] : -1;
                if (slot >= 0) {
                  S* __restrict saved = pre_reset + slot * NN + i * N;
                  S* saved_e = gated ? mod.pre_reset + slot * NN + i * N : nullptr;
#pragma omp simd
                  for (int64_t j = 0; j < N; ++j) saved[j] = element(j, saved_e);
                  if (flags) flag_clipped(flags + (b * N + i) * FB, saved, N, clip);
                }
                std::fill_n(h, N, S(0));
                if (e) std::fill_n(e, N, S(0));
              } else if (matvec && MODE == kFull) {
                // More streams than GCC checks for aliasing at run time (7 for kRetroneuromod): without the pragma
                // its loop stayed scalar, 6x slower (they are distinct rows, __restrict above).
#pragma omp simd
                for (int64_t j = 0; j < N; ++j) {
                  const S u = element(j, e);
                  h[j] = u;
                  out[j] += xi * (w[j] + a[j] * u);
                }
                fused_matvec = true;
                if (flags) flag_clipped(flags + (b * N + i) * FB, h, N, clip);
              } else {
#pragma omp simd
                for (int64_t j = 0; j < N; ++j) h[j] = element(j, e);
                if (flags) flag_clipped(flags + (b * N + i) * FB, h, N, clip);
              }
            } else if (reset) {  // a reset after a settled update: the trace before it is already in place
              const int64_t slot = pre_reset_index ? pre_reset_index[t * SB + b] : -1;
              if (slot >= 0) std::copy(h, h + N, pre_reset + slot * NN + i * N);
              std::fill_n(h, N, S(0));
              if (e) {
                if (slot >= 0) std::copy(e, e + N, mod.pre_reset + slot * NN + i * N);
                std::fill_n(e, N, S(0));
              }
            } else if (t == 0) {  // h0 may be the trace buffer itself: then it is in place (and so for E)
              if (h0 != trace) std::copy(h0 + row, h0 + row + N, h);
              if (e && mod.e0 != mod.eligibility) std::copy(mod.e0 + row, mod.e0 + row + N, e);
            }
            if (checkpoint) std::copy(h, h + N, checkpoint + row);
            if (e_checkpoint) std::copy(e, e + N, e_checkpoint + row);
            if (!matvec || fused_matvec) return;
            if constexpr (MODE == kFull) {
              for (int64_t j = 0; j < N; ++j) out[j] += xi * (w[j] + a[j] * h[j]);
            } else {
              S* __restrict p = plastic_c + b * N;
              for (int64_t j = 0; j < N; ++j) {
                out[j] += xi * w[j];
                p[j] += xi * h[j];
              }
            }
          }
        });
      });
      if (!matvec) break;
      S* y = outputs + t * TS;
      const S* u = drive + t * TS;
      // The thread partials summed into y (the product's part), then the drive added and the activation (in fixed
      // blocks, so that which elements take the vector tanh does not depend on the thread count, or on whether the
      // two parts ran in one call); tanh is worth threads on big batches.
      auto activate = [&](int64_t block0, int64_t block1) {
        const int64_t k0 = block0 * kActivationBlock, k1 = std::min(BN, block1 * kActivationBlock);
        if (product)
          for (int64_t k = k0; k < k1; ++k) {
            S total = acc[k];
            for (int64_t c = 1; c < C; ++c) total += acc[c * BN + k];
            if constexpr (MODE == kShared) {
              S plastic = acc_plastic[k];
              for (int64_t c = 1; c < C; ++c) plastic += acc_plastic[c * BN + k];
              plastic_part[t * TS + k] = plastic;
              total += shared_alpha * plastic;
            }
            if (bias) total += bias[k % N];
            y[k] = total;
          }
        if (!activation) return;
        if (!clamp_input)
          for (int64_t k = k0; k < k1; ++k) y[k] += u[k];
        tanh_in_place(y + k0, k1 - k0);
        for (int64_t k = k0; k < k1; ++k) {
          if (clamp_input && u[k] != S(0)) y[k] = u[k];
          if (bias_neuron && k % N == N - 1) y[k] = S(1);
        }
      };
      rows.run_blocks((BN + kActivationBlock - 1) / kActivationBlock, activate);
      if constexpr (kModulated<S, RULE>)
        if (activation && MODE != kNone)
          modulation_of(z, y, mod.weight, mod.bias, mod.modulation + t * z.modulation_stride());
    }
  });
}

// One row of the trace (and a gated rule's E) stepped forward by the update of one step, from ``h_source`` into
// ``h`` (the same row, or another): what recompute_segment and recompute_flagged rebuild. ``y``, ``d`` and ``m`` are
// the batch element's effective post, decay and a gated rule's M per column; ``ex`` the row's gain times its pre.
template <typename S, int RULE, bool CLIP>
inline void stepped_row(int64_t n, const S* h_source, const S* e_source, S* h, S* e, S ex, const S* __restrict y,
                        Decay<S, RULE> d, const S* __restrict m, S clip) {
  constexpr bool gated = RULE == kRetroneuromod;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const S ej = gated ? e_source[j] : S(0);
    if constexpr (gated) e[j] = decayed(ej, d[j], ex, y[j]);
    h[j] = updated_hebbian<S, RULE, CLIP>(h_source[j], ej, d[j], ex, y[j], gated ? m[j] : S(0), clip);
  }
}

// The vectors that the updates of one step read, for the whole batch: M per column, the effective post, the decay.
template <typename S, int RULE>
struct StepVectors {
  std::vector<S> decay_storage, post_storage, column_storage;
  const S *m = nullptr, *y = nullptr;
  Decay<S, RULE> decay{};
  void of(const Sizes& z, int64_t t, const S* outputs, const Modulated<S>& mod, S eta) {  // of the update of step t
    m = kModulated<S, RULE> ? column_modulation(z, mod.modulation + t * z.modulation_stride(), column_storage)
                            : nullptr;
    y = effective_post<S, RULE>(z, outputs + t * z.time_stride(), m, post_storage);
    decay = make_decay<S, RULE>(y, eta, z.B * z.N, decay_storage, false);
  }
};

template <typename S, int RULE, bool CLIP>
void recompute_segment(const Sizes& z, Team* team, int64_t first, int64_t last, const S* start_trace, S* slots,
                       const S* pre, const S* outputs, const bool* starts, S eta, S clip, const S* start_eligibility,
                       const Modulated<S>& mod) {
  // Rebuilds H_t for first < t < last into slots[t - first - 1] from H_first, forward (and E_t into mod.workspace).
  const int64_t B = z.B, N = z.N, NN = N * N, TS = z.time_stride(), SB = z.stride;
  const S gain = gain_of<S, RULE>(eta);
  constexpr bool gated = RULE == kRetroneuromod;
  StepVectors<S, RULE> step;
  Rows rows(N, B * NN, z.sliced);
  rows.team = team;
  for (int64_t t = first + 1; t < last; ++t) {
    const S* source = t == first + 1 ? start_trace : slots + (t - first - 2) * z.slot_stride();
    S* target = slots + (t - first - 1) * z.slot_stride();
    const S* e_source = nullptr;
    S* e_target = nullptr;
    if constexpr (gated) {
      e_source = t == first + 1 ? start_eligibility : mod.workspace + (t - first - 2) * z.slot_stride();
      e_target = mod.workspace + (t - first - 1) * z.slot_stride();
    }
    const S* x_prev = pre + (t - 1) * TS;
    step.of(z, t - 1, outputs, mod, eta);
    rows.run([&](int64_t c) {
      rows.blocks(c, B, [&](int64_t i, int64_t b) {
        const int64_t row = b * NN + i * N;
        S* __restrict h = target + row;
        S* __restrict e = e_target ? e_target + row : nullptr;
        if (starts && starts[t * SB + b]) {
          std::fill_n(h, N, S(0));
          if (e) std::fill_n(e, N, S(0));
          return;
        }
        stepped_row<S, RULE, CLIP>(N, source + row, gated ? e_source + row : nullptr, h, e, gain * x_prev[b * N + i],
                                   step.y + b * N, step.decay.offset(RULE == kOja ? b * N : 0),
                                   gated ? step.m + b * N : nullptr, clip);
      });
    });
  }
}

// The elements flagged in one segment (flag_clipped), and H_t of each for the steps first < t < last of the segment:
// its rows recomputed forward from the checkpoint by recompute_flagged.
template <typename S>
struct FlaggedElements {
  int64_t segment = -1;
  std::vector<int64_t> offset;  // row r = b N + i has the elements [offset[r], offset[r + 1])
  std::vector<int32_t> column;
  std::vector<S> values;  // H_t of element e at (t - first - 1) * count() + e
  int64_t count() const { return offset.empty() ? 0 : offset.back(); }
  int64_t in_row(int64_t r) const { return offset[r + 1] - offset[r]; }
};

template <typename S, int RULE, bool CLIP>
void recompute_flagged(const Sizes& z, Team* team, int64_t first, int64_t last, const uint8_t* flags,
                       const S* start_trace, const S* start_eligibility, const S* pre, const S* outputs,
                       const bool* starts, S eta, S clip, const Modulated<S>& mod, FlaggedElements<S>& f) {
  const int64_t B = z.B, N = z.N, BN = B * N, NN = N * N, TS = z.time_stride(), SB = z.stride, FB = z.flag_bytes();
  constexpr bool gated = RULE == kRetroneuromod;
  f.offset.assign(BN + 1, 0);
  f.column.clear();
  for (int64_t r = 0; r < BN; ++r) {
    const uint8_t* row = flags + r * FB;
    for (int64_t q = 0; q < FB; ++q)
      for (unsigned bits = row[q]; bits; bits &= bits - 1)
        f.column.push_back(static_cast<int32_t>(8 * q + __builtin_ctz(bits)));
    f.offset[r + 1] = static_cast<int64_t>(f.column.size());
  }
  const int64_t count = f.count(), steps = last - first - 1;
  if (count == 0 || steps == 0) return;
  f.values.resize(steps * count);
  // The segment's step vectors, then each row with flagged elements stepped through the segment on its own (its
  // rows of H and E stay in L1), keeping the flagged elements' values.
  std::vector<StepVectors<S, RULE>> vectors(steps);
  for (int64_t k = 0; k < steps; ++k) vectors[k].of(z, first + k, outputs, mod, eta);
  const S gain = gain_of<S, RULE>(eta);
  Rows rows(N, count * steps * 16, z.sliced);
  rows.team = team;
  std::vector<S> h_rows(rows.count * N), e_rows(gated ? rows.count * N : 0);
  rows.run([&](int64_t c) {
    S* h = h_rows.data() + c * N;
    S* e = gated ? e_rows.data() + c * N : nullptr;
    rows.blocks(c, B, [&](int64_t i, int64_t b) {
      const int64_t r = b * N + i;
      if (!f.in_row(r)) return;
      std::copy(start_trace + b * NN + i * N, start_trace + b * NN + (i + 1) * N, h);
      if (gated) std::copy(start_eligibility + b * NN + i * N, start_eligibility + b * NN + (i + 1) * N, e);
      for (int64_t k = 0; k < steps; ++k) {
        const int64_t t = first + 1 + k;
        if (starts && starts[t * SB + b]) {
          std::fill_n(h, N, S(0));
          if (gated) std::fill_n(e, N, S(0));
        } else {
          const auto& step = vectors[k];
          stepped_row<S, RULE, CLIP>(N, h, e, h, e, gain * pre[(t - 1) * TS + r], step.y + b * N,
                                     step.decay.offset(RULE == kOja ? b * N : 0), gated ? step.m + b * N : nullptr,
                                     clip);
        }
        S* out = f.values.data() + k * count;
        for (int64_t q = f.offset[r]; q < f.offset[r + 1]; ++q) out[q] = h[f.column[q]];
      }
    });
  });
}

// H_{t-1} (and a gated rule's E_{t-1}) from H_t (E_t) by inverting the unclipped update of step t - 1.
template <typename S, int RULE>
inline void inverted_update(S h, S e, S ex, S y, S m, S inverse_decay, S& h_prev, S& e_prev) {
  if constexpr (RULE == kRetroneuromod) {
    e_prev = (e - ex * y) * inverse_decay;
    h_prev = h - m * e_prev;
  } else {
    h_prev = (h - ex * y) * inverse_decay;
  }
}

// The plastic matvec of step t's part of the gradient of trace element j (returned: the term of dL/dH_t), of x_t
// (summed into rb) and of alpha (into g_alpha), for one row; ``ga`` is the matvec's output gradient.
template <typename S, int MODE>
inline S matvec_gradient(int64_t j, S hj, const S* __restrict w, const S* __restrict a, S shared_alpha,
                         S* __restrict g_alpha, const S* __restrict ga, S x_t, S& rb) {
  if constexpr (MODE == kFull) {
    const S gaj = ga[j];
    rb += (w[j] + a[j] * hj) * gaj;
    g_alpha[j] += x_t * hj * gaj;
    return a[j] * x_t * gaj;
  } else if constexpr (MODE == kShared) {
    rb += (w[j] + shared_alpha * hj) * ga[j];
    return shared_alpha * x_t * ga[j];
  } else {
    return S(0);
  }
}

// One backward row: the gradient through step t (HAS_B: the plastic matvec, whose output gradient is ``ga``) and
// through the trace update of step t - 1 (HAS_A), for row i of one batch element. ``hp`` is H_{t-1}: read from
// ``previous`` when FROM_POINTER, else rebuilt from H_t by inverting the update (``rebuilt`` may alias ``h``).
// kRetroneuromod's update is H_t = clip(H_{t-1} + M E_{t-1}), E_t = E_{t-1} decay + eta x y^T: ``e`` is E_t, ``g_e``
// dL/dE_t (dL/dE_{t-1} on return), ``e_previous`` / ``rebuilt_e`` E_{t-1} (as ``previous`` / ``rebuilt``), ``m``
// M(t - 1), and ``g_m_col`` gets dL/dM of each column; the other rules leave these alone.
template <typename S, int MODE, int RULE, bool CLIP, bool HAS_B, bool HAS_A, bool FROM_POINTER>
inline void backward_row(int64_t len, const S* h, const S* __restrict previous, S* rebuilt, S* __restrict g_trace,
                         const S* __restrict w, const S* __restrict a, S shared_alpha, S* __restrict g_alpha,
                         const S* __restrict ga, S x_t, const S* __restrict y, Decay<S, RULE> d,
                         Decay<S, RULE> inverse_decay, S* __restrict g_y_col, S x_prev, S eta, S clip, S& row_b,
                         S& row_a, S& row_eta, const S* e, const S* __restrict e_previous, S* rebuilt_e,
                         S* __restrict g_e, const S* __restrict m, S* __restrict g_m_col) {
  const S ex = eta * x_prev;
  S rb = 0, ra = 0, re = 0;
#pragma omp simd reduction(+ : rb, ra, re)
  for (int64_t j = 0; j < len; ++j) {
    S g = g_trace[j];
    const S hj = h[j];
    if constexpr (HAS_B) g += matvec_gradient<S, MODE>(j, hj, w, a, shared_alpha, g_alpha, ga, x_t, rb);
    if constexpr (HAS_A && RULE == kRetroneuromod) {
      S hp, ep;
      if constexpr (FROM_POINTER) {
        hp = previous[j];
        ep = e_previous[j];
      } else {
        inverted_update<S, RULE>(hj, e[j], ex, y[j], m[j], inverse_decay[j], hp, ep);
        rebuilt[j] = hp;
        rebuilt_e[j] = ep;
      }
      if constexpr (CLIP) {
        const S u = hp + m[j] * ep;
        g = (u >= -clip && u <= clip) ? g : S(0);
      }
      const S ge = g_e[j];
      g_trace[j] = g;
      g_m_col[j] += g * ep;
      g_e[j] = m[j] * g + d[j] * ge;
      g_y_col[j] += ge * ex;
      re += ge * (x_prev * y[j] - ep);
      ra += ge * y[j];
    } else if constexpr (HAS_A) {
      S hp, unused;
      if constexpr (FROM_POINTER) {
        hp = previous[j];
      } else {
        inverted_update<S, RULE>(hj, S(0), ex, y[j], S(0), inverse_decay[j], hp, unused);
        rebuilt[j] = hp;
      }
      if constexpr (CLIP) {
        const S u = hp * d[j] + ex * y[j];
        g = (u >= -clip && u <= clip) ? g : S(0);
      }
      g_trace[j] = g * d[j];
      if constexpr (RULE == kOja) {
        g_y_col[j] += g * (ex - S(2) * eta * y[j] * hp);
        re += g * (x_prev * y[j] - y[j] * y[j] * hp);
      } else {  // Hebb; kNeuromod's gain is 1 and its y is M(t) y (g_y_col: dL/d(M y)), its re unused
        g_y_col[j] += g * ex;
        re += g * (x_prev * y[j] - hp);
      }
      ra += g * y[j];
    } else {
      g_trace[j] = g;
    }
  }
  row_b += rb;
  row_a += ra;
  row_eta += re;
}

template <typename S, int MODE, int RULE, bool CLIP>
void backward_kernel(const Sizes& z, bool reverse, const S* grad_outputs, const S* grad_final_activation,
                     const S* drive, const S* outputs, const S* pre, const S* h0, const S* final_trace,
                     const S* checkpoints, const S* pre_reset, const int64_t* pre_reset_index, const S* weight,
                     const S* alpha, const bool* starts, const uint8_t* clip_flags, S eta, S clip, bool clamp_input,
                     bool bias_neuron, S* grad_pre_activation, S* grad_drive, S* grad_x0, S* grad_trace,
                     S* grad_alpha, double* grad_eta, S* workspace, const Modulated<S>& mod) {
  const int64_t T = z.T, B = z.B, N = z.N, BN = B * N, NN = N * N, K = z.every, TS = z.time_stride(), SB = z.stride;
  const int64_t MS = z.modulation_stride();
  const S shared_alpha = MODE == kShared ? alpha[0] : S(0), gain = gain_of<S, RULE>(eta);
  constexpr bool gated = RULE == kRetroneuromod;
  Rows rows(N, (MODE == kNone ? 1 : B) * NN, z.sliced);
  const int64_t C = rows.count;
  // rows_b: the matvec's part of dL/dx_t; rows_a: the trace update's part of dL/dx_{t-1}; g_y_col: its part of
  // dL/dy_{t-1} (kNeuromod: of dL/d(M y_{t-1})), per row group; g_m_col: a gated rule's dL/dM(t - 1), per group.
  std::vector<S> rows_b(BN), rows_a(BN), g_x(BN, S(0)), g_y_col(C * BN), g_m_col(gated ? C * BN : 0), decay_storage,
      inverse_storage, post_storage, column_storage, g_post(kModulated<S, RULE> ? N : 0),
      g_z(kModulated<S, RULE> ? z.K : 0);
  std::vector<double> eta_parts(C);
  double eta_total = 0;
  int64_t segment = -1;  // the segment whose traces the workspace holds (recompute mode)
  // A clipped trace rebuilt in reverse (flag_clipped): the flagged elements of the current segment, and each row
  // group's H_{t-1} (and E_{t-1}) of a row that has some.
  const bool flagged_rebuild = CLIP && reverse && clip_flags && MODE != kNone;
  FlaggedElements<S> flagged;
  std::vector<S> patch(flagged_rebuild ? C * N : 0), patch_e(flagged_rebuild && gated ? C * N : 0);

  // H_t after the reset at t, when it is stored: the initial trace, a checkpoint or a recomputed slot (and E_t).
  auto stored_in = [&](int64_t t, const S* initial, const S* kept, const S* recomputed) -> const S* {
    if (t == 0) return initial;
    if (t % K == 0) return kept + (t / K - 1) * z.slot_stride();
    if (reverse) return nullptr;
    return recomputed + (t - (t / K) * K - 1) * z.slot_stride();
  };
  auto stored_trace = [&](int64_t t) { return stored_in(t, h0, checkpoints, workspace); };
  auto stored_eligibility = [&](int64_t t) { return stored_in(t, mod.e0, mod.checkpoints, mod.workspace); };

  // The update of step t sent dL/d(its post) per row group: summed here into g_post (for kNeuromod, the part
  // through M(t) y_t's y_t), and M(t)'s own gradient through its head: dL/dz_t into grad_modulation, w_M dL/dz_t
  // into g_post.
  auto modulated_post = [&](int64_t t, int64_t b) {
    const S* y = outputs + t * TS + b * N;
    const S* m = mod.modulation + t * MS + b * z.K;
    std::fill(g_z.begin(), g_z.end(), S(0));
    for (int64_t j = 0; j < N; ++j) {
      const int64_t k = b * N + j;
      S through_post = 0, through_m = 0;
      for (int64_t c = 0; c < C; ++c) through_post += g_y_col[c * BN + k];
      if constexpr (gated) {
        for (int64_t c = 0; c < C; ++c) through_m += g_m_col[c * BN + k];
      } else {  // dL/d(M y)_j = through_post: y_j's part is M_j of it, M_j's is y_j of it
        through_m = y[j] * through_post;
        through_post *= m[z.K == 1 ? 0 : j];
      }
      g_post[j] = through_post;
      g_z[z.K == 1 ? 0 : j] += through_m;
    }
    S* gz = mod.grad_modulation + t * MS + b * z.K;
    for (int64_t k = 0; k < z.K; ++k) gz[k] = g_z[k] * (S(1) - m[k] * m[k]);
    for (int64_t j = 0; j < N; ++j) {
      const S* __restrict w = mod.weight + j * z.K;
      S total = 0;
      for (int64_t k = 0; k < z.K; ++k) total += w[k] * gz[k];
      g_post[j] += total;
    }
  };

  auto finish_step = [&](int64_t t) {  // g_x + g_y_col hold dL/dy_t: turn it into dL/da_t and dL/ddrive_t
    const S* y = outputs + t * TS;
    const S* u = drive + t * TS;
    S* ga = grad_pre_activation + t * TS;
    S* gd = grad_drive + t * TS;
    for (int64_t b = 0; b < B; ++b) {
      if constexpr (kModulated<S, RULE>)
        if (MODE != kNone) modulated_post(t, b);
      for (int64_t j = 0; j < N; ++j) {
        const int64_t k = b * N + j;
        S gy = g_x[k];
        if (kModulated<S, RULE> && MODE != kNone) {
          gy += g_post[j];
        } else {
          for (int64_t c = 0; c < C; ++c) gy += g_y_col[c * BN + k];
        }
        if (grad_outputs) gy += grad_outputs[t * TS + k];
        if (t == T - 1 && grad_final_activation) gy += grad_final_activation[k];
        if (bias_neuron && j == N - 1) gy = S(0);
        const S dtanh = gy * (S(1) - y[k] * y[k]);
        if (clamp_input) {
          const bool clamped = u[k] != S(0);
          gd[k] = clamped ? gy : S(0);
          ga[k] = clamped ? S(0) : dtanh;
        } else {
          ga[k] = dtanh;
          gd[k] = dtanh;
        }
      }
    }
  };

  with_team(rows.threads, [&](Team* team) {
    rows.team = team;
    for (int64_t t = T; t >= 0; --t) {
      const bool has_b = t < T;
      const bool has_a = t >= 1 && MODE != kNone;
      if (MODE != kNone && has_a && !reverse) {
        const int64_t needed = (t - 1) / K;
        if ((t - 1) % K != 0 && needed != segment) {
          const int64_t first = needed * K;
          recompute_segment<S, RULE, CLIP>(z, rows.team, first, std::min(first + K, T), stored_trace(first), workspace,
                                           pre, outputs, starts, eta, clip, stored_eligibility(first), mod);
          segment = needed;
        }
      }
      if (flagged_rebuild && has_a && (t - 1) % K != 0 && (t - 1) / K != flagged.segment) {
        const int64_t first = (t - 1) / K * K;
        recompute_flagged<S, RULE, CLIP>(z, rows.team, first, std::min(first + K, T),
                                         clip_flags + first / K * z.flag_stride(), stored_trace(first),
                                         stored_eligibility(first), pre, outputs, starts, eta, clip, mod, flagged);
        flagged.segment = (t - 1) / K;
      }
      // H_{t-1} of the flagged elements, (t - 1) interior to the segment: the index of its recomputed values
      const S* flagged_values =
          flagged_rebuild && has_a && (t - 1) % K != 0 && flagged.count()
              ? flagged.values.data() + (t - 1 - (t - 1) / K * K - 1) * flagged.count()
              : nullptr;
      const S* h_t = nullptr;
      if (MODE != kNone) h_t = t == T ? final_trace : (stored_trace(t) ? stored_trace(t) : workspace);
      const S* h_prev = has_a ? stored_trace(t - 1) : nullptr;
      const S *e_t = nullptr, *e_prev = nullptr;
      if (gated && MODE != kNone) {
        e_t = t == T ? mod.eligibility : (stored_eligibility(t) ? stored_eligibility(t) : mod.workspace);
        e_prev = has_a ? stored_eligibility(t - 1) : nullptr;
      }
      const bool from_pointer = h_prev != nullptr;
      const S* ga = has_b ? grad_pre_activation + t * TS : nullptr;
      const S* x_t = has_b ? pre + t * TS : nullptr;
      const S* x_prev = has_a ? pre + (t - 1) * TS : nullptr;
      const S* m_prev =
          has_a && kModulated<S, RULE> ? column_modulation(z, mod.modulation + (t - 1) * MS, column_storage) : nullptr;
      const S* y_prev = has_a ? effective_post<S, RULE>(z, outputs + (t - 1) * TS, m_prev, post_storage) : nullptr;
      Decay<S, RULE> decay{}, inverse_decay{};
      if (has_a) {
        decay = make_decay<S, RULE>(y_prev, eta, BN, decay_storage, false);
        if (!from_pointer) inverse_decay = make_decay<S, RULE>(y_prev, eta, BN, inverse_storage, true);
      }
      std::fill(rows_b.begin(), rows_b.end(), S(0));
      std::fill(rows_a.begin(), rows_a.end(), S(0));
      std::fill(g_y_col.begin(), g_y_col.end(), S(0));
      std::fill(g_m_col.begin(), g_m_col.end(), S(0));
      std::fill(eta_parts.begin(), eta_parts.end(), 0.0);
      if (has_b || has_a)
        rows.run([&](int64_t c) {
          S* g_col_c = g_y_col.data() + c * BN;
          S* g_m_c = gated ? g_m_col.data() + c * BN : nullptr;
          double eta_sum = 0;
          rows.blocks(c, B, [&](int64_t i, int64_t b) {
            const S* w = weight + i * N;
            const int64_t k = b * N + i;
            if constexpr (MODE == kNone) {
              S r = 0;
              const S* g = ga + b * N;
#pragma omp simd reduction(+ : r)
              for (int64_t j = 0; j < N; ++j) r += w[j] * g[j];
              rows_b[k] = r;
            } else {
              const int64_t row = b * NN + i * N;
              const bool reset = has_b && t >= 1 && starts && starts[t * SB + b];
              const auto d = decay.offset(RULE == kOja ? b * N : 0);
              const auto inv = inverse_decay.offset(RULE == kOja ? b * N : 0);
              if (reset) {  // nothing flows through the reset; only the trace before it is rebuilt
                std::fill_n(grad_trace + row, N, S(0));
                if (gated) std::fill_n(mod.grad_eligibility + row, N, S(0));
                if (has_a && !from_pointer) {
                  const int64_t slot = pre_reset_index[t * SB + b];
                  const S* saved = pre_reset + slot * NN + i * N;
                  const S ex = gain * x_prev[k];
                  const S* y = y_prev + b * N;
                  S* out = workspace + row;
                  if constexpr (gated) {
                    const S* saved_e = mod.pre_reset + slot * NN + i * N;
                    const S* m = m_prev + b * N;
                    S* out_e = mod.workspace + row;
                    for (int64_t j = 0; j < N; ++j) {
                      out_e[j] = (saved_e[j] - ex * y[j]) * inv[j];
                      out[j] = saved[j] - m[j] * out_e[j];
                    }
                  } else {
                    for (int64_t j = 0; j < N; ++j) out[j] = (saved[j] - ex * y[j]) * inv[j];
                  }
                  if (flagged_values)  // the clip touched these: their inversion is wrong
                    for (int64_t e = flagged.offset[k]; e < flagged.offset[k + 1]; ++e)
                      out[flagged.column[e]] = flagged_values[e];
                }
                return;
              }
              const S* a = MODE == kFull ? alpha + i * N : nullptr;
              S* g_a = MODE == kFull ? grad_alpha + i * N : nullptr;
              const S* prev = from_pointer ? h_prev + row : nullptr;
              const S* e_prev_row = gated && from_pointer ? e_prev + row : nullptr;
              // A row with flagged elements: its H_{t-1} inverted, then the flagged ones recomputed, read as stored
              S* patched = has_a && flagged_values && flagged.in_row(k) ? patch.data() + c * N : nullptr;
              if (patched) {
                S* patched_e = gated ? patch_e.data() + c * N : nullptr;
                const S ex = gain * x_prev[k];
                const S* y_row = y_prev + b * N;
                const S* e_row = gated ? e_t + row : nullptr;
                const S* m_row = gated ? m_prev + b * N : nullptr;
                S unused;
#pragma omp simd
                for (int64_t j = 0; j < N; ++j)
                  inverted_update<S, RULE>(h_t[row + j], gated ? e_row[j] : S(0), ex, y_row[j],
                                           gated ? m_row[j] : S(0), inv[j], patched[j], gated ? patched_e[j] : unused);
                for (int64_t e = flagged.offset[k]; e < flagged.offset[k + 1]; ++e)
                  patched[flagged.column[e]] = flagged_values[e];
                prev = patched;
                e_prev_row = patched_e;
              }
              const S* y = has_a ? y_prev + b * N : nullptr;
              const S gx_t = has_b ? x_t[k] : S(0);
              const S gx_prev = has_a ? x_prev[k] : S(0);
              const S* gab = has_b ? ga + b * N : nullptr;
              S row_b = 0, row_a = 0, row_eta = 0;
#define PLASTIC_ROW(HB, HA, FP)                                                                                    \
  backward_row<S, MODE, RULE, CLIP, HB, HA, FP>(                                                                   \
      N, h_t + row, prev, workspace + row, grad_trace + row, w, a, shared_alpha, g_a, gab, gx_t, y, d, inv,        \
      g_col_c + b * N, gx_prev, gain, clip, row_b, row_a, row_eta, gated ? e_t + row : nullptr,                    \
      e_prev_row, gated ? mod.workspace + row : nullptr,                                                           \
      gated ? mod.grad_eligibility + row : nullptr,                                                                \
      gated && has_a ? m_prev + b * N : nullptr, gated ? g_m_c + b * N : nullptr)
              if (has_b && has_a) {
                if (prev)
                  PLASTIC_ROW(true, true, true);
                else
                  PLASTIC_ROW(true, true, false);
              } else if (has_b) {
                PLASTIC_ROW(true, false, true);
              } else if (prev) {
                PLASTIC_ROW(false, true, true);
              } else {
                PLASTIC_ROW(false, true, false);
              }
#undef PLASTIC_ROW
              if (patched) {  // the rebuilt traces, as the inverting rows leave them in place
                std::copy(patched, patched + N, workspace + row);
                if (gated) std::copy(e_prev_row, e_prev_row + N, mod.workspace + row);
              }
              rows_b[k] = row_b;
              rows_a[k] = gain * row_a;
              eta_sum += row_eta;
            }
          });
          eta_parts[c] = eta_sum;
        });
      for (double part : eta_parts) eta_total += part;
      // g_x held the trace update's part of dL/dx_t; the matvec of step t completes it
      if (has_b)
        for (int64_t k = 0; k < BN; ++k) g_x[k] += rows_b[k];
      if (t == 0) {
        std::copy(g_x.begin(), g_x.end(), grad_x0);
        break;
      }
      if (has_b && starts)  // the reset at t cuts dL/dx_t from y_{t-1}
        for (int64_t b = 0; b < B; ++b)
          if (starts[t * SB + b]) std::fill_n(g_x.begin() + b * N, N, S(0));
      finish_step(t - 1);
      if (has_a)
        std::copy(rows_a.begin(), rows_a.end(), g_x.begin());
      else
        std::fill(g_x.begin(), g_x.end(), S(0));
    }
  });
  *grad_eta = eta_total;
}

// Pointers into the caller's tensors (nullptr for an absent or empty one).
template <typename S>
struct Buffers {
  std::vector<S*> data;
  const bool* starts;
  const int64_t* pre_reset_index;
  uint8_t* clip_flags;  // (segments, B, N, (N + 7) / 8): see flag_clipped
  Buffers(const std::vector<at::Tensor>& tensors, const at::Tensor& starts_, const at::Tensor& index,
          const at::Tensor& flags) {
    for (const auto& x : tensors) data.push_back(x.defined() && x.numel() ? x.data_ptr<S>() : nullptr);
    starts = starts_.defined() && starts_.numel() ? starts_.data_ptr<bool>() : nullptr;
    pre_reset_index = index.defined() && index.numel() ? index.data_ptr<int64_t>() : nullptr;
    clip_flags = flags.defined() && flags.numel() ? flags.data_ptr<uint8_t>() : nullptr;
  }
  // The same buffers from batch element b0 on. layout, per tensor: 'v' batch-major rows of N (the (B, N) and
  // (T, B, N) buffers), 'k' rows of K (M(t), (T, B, K)), 'm' batch-major N x N traces ((B, N, N) and (K, B, N, N)),
  // anything else shared.
  Buffers from(int64_t b0, const Sizes& z, const char* layout) const {
    Buffers slice = *this;
    const int64_t n = z.N;
    for (size_t k = 0; k < data.size(); ++k)
      if (data[k])
        slice.data[k] += layout[k] == 'v' ? b0 * n : layout[k] == 'k' ? b0 * z.K : (layout[k] == 'm' ? b0 * n * n : 0);
    if (starts) slice.starts += b0;
    if (pre_reset_index) slice.pre_reset_index += b0;
    if (clip_flags) slice.clip_flags += b0 * n * z.flag_bytes();
    return slice;
  }
};

// The argument lists of unroll_forward and unroll_backward, as Buffers::from reads them; 'a' is dL/dalpha. The
// buffers of a neuromodulated rule come last (see Modulated, forward_modulated and backward_modulated).
constexpr const char* kForwardLayout = "vvmssssvvvmmsmmmsssk";
constexpr const char* kBackwardLayout = "vvvvvmmmsssvvvmammmmsskmkm";
constexpr size_t kForwardTensors = 20, kBackwardTensors = 26;
constexpr size_t kGradAlpha = 15;

struct Options {
  Sizes sizes;
  double eta, clip;
  bool clamp_input, bias_neuron, reverse;
  int64_t slices;
};

// Modulated's fields (weight, bias, modulation, e0, eligibility, checkpoints, pre_reset, grad_eligibility,
// grad_modulation, workspace) in the forward's and the backward's argument lists.
template <typename S>
Modulated<S> forward_modulated(const Buffers<S>& p) {
  const auto& d = p.data;
  return {d[17], d[18], d[19], d[13], d[14], d[15], d[16], nullptr, nullptr, nullptr};
}

template <typename S>
Modulated<S> backward_modulated(const Buffers<S>& p) {
  const auto& d = p.data;
  return {d[21], nullptr, d[22], d[17], d[18], d[19], d[20], d[23], d[24], d[25]};
}

template <typename S, int MODE, int RULE, bool CLIP>
double run_forward(const Options& o, const Buffers<S>& p) {
  const auto& d = p.data;
  forward_kernel<S, MODE, RULE, CLIP>(o.sizes, d[0], d[1], d[2], d[3], d[4], d[5], p.starts, d[6], S(o.eta), S(o.clip),
                                      o.clamp_input, o.bias_neuron, d[7], d[8], d[9], d[10], d[11], d[12],
                                      p.pre_reset_index, p.clip_flags, forward_modulated(p));
  return 0;
}

template <typename S, int MODE, int RULE, bool CLIP>
double run_backward(const Options& o, const Buffers<S>& p) {
  const auto& d = p.data;
  double grad_eta = 0;
  backward_kernel<S, MODE, RULE, CLIP>(o.sizes, o.reverse, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8],
                                       p.pre_reset_index, d[9], d[10], p.starts, p.clip_flags, S(o.eta), S(o.clip),
                                       o.clamp_input,
                                       o.bias_neuron, d[11], d[12], d[13], d[14], d[kGradAlpha], &grad_eta, d[16],
                                       backward_modulated(p));
  return grad_eta;
}

// A forward call cut into batch slices, which the threads of a ForwardWorker and the caller of its wait() take in
// turn.
struct SliceJob {
  std::function<void(int64_t)> body;  // runs slice s (on raw pointers: a job holds no tensor, see ForwardWorker)
  int64_t slices = 0;
  std::atomic<int64_t> next{0}, done{0};
  std::mutex failure_mutex;
  std::exception_ptr failure;  // the first exception of a slice (an allocation that failed), rethrown by wait()
};

// Background threads for the product of a rollout's next step, which runs while the caller steps the envs: a
// rollout step then costs about the longer of the two rather than their sum. Between jobs its threads spin for a
// while (a job comes every rollout step, and waking a sleeping thread costs tens of microseconds on a VM) and then
// sleep; wait() takes the slices that no thread has started, so a late thread delays nothing. The buffers of the
// jobs are held by the worker, not by the jobs: they are let go only on the caller's thread, which holds the GIL
// (releasing a tensor may release its Python object; a thread of ours that waited for the GIL while the caller
// waited for it would deadlock), and only after the job is done (in the destructor too: a recording dropped midway).
class ForwardWorker {
 public:
  explicit ForwardWorker(int64_t threads) {
    try {
      for (int64_t k = 0; k < threads; ++k) threads_.emplace_back([this] { serve(); });
    } catch (...) {  // a thread that could not start: the ones that did must end before the exception leaves
      stop();
      throw;
    }
  }
  ForwardWorker(const ForwardWorker&) = delete;
  ForwardWorker& operator=(const ForwardWorker&) = delete;
  ~ForwardWorker() {
    try {
      wait();
    } catch (...) {
      // A failed job of a recording that is being dropped: nothing will read what it wrote.
    }
    stop();
  }

  // Starts `job`, which reads and writes the buffers `held`, on the threads; the previous job must have been waited
  // for. The caller holds the GIL.
  void post(std::shared_ptr<SliceJob> job, std::vector<at::Tensor> held) {
    TORCH_CHECK(!job_, "ForwardWorker: a job is already running; wait() for it first");
    held_ = std::move(held);  // the previous job's buffers let go here
    {
      std::lock_guard<std::mutex> lock(mutex_);  // orders the job with a thread's look before it sleeps
      job_ = std::move(job);
      generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load() > 0) wake_.notify_all();
  }

  // Returns when the job posted last (if any) is done, running its unstarted slices on the calling thread.
  // Rethrows the first exception of its slices, once all of them have ended.
  void wait() {
    if (!job_) return;
    const std::shared_ptr<SliceJob> job = job_;
    take(*job);
    for (int64_t spins = 0; job->done.load(std::memory_order_acquire) != job->slices;) spin_pause(spins);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_.reset();
    }
    if (job->failure) std::rethrow_exception(job->failure);
  }

 private:
  // Longer than a rollout step's Python and env (about 0.3 ms at N = 200 x 32 envs), so that the threads sleep only
  // when no rollout is stepping.
  static constexpr auto kIdleBeforeSleep = std::chrono::milliseconds(2);

  void serve() {
    for (int64_t seen = 0;;) {
      await_change([&] { return generation_.load(std::memory_order_acquire) == seen; }, kIdleBeforeSleep, mutex_,
                   wake_, sleepers_);
      std::shared_ptr<SliceJob> job;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopped_) return;
        seen = generation_.load();
        job = job_;
      }
      if (job) take(*job);
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopped_ = true;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& thread : threads_) thread.join();
  }

  // An exception must not leave a slice: on one of our threads it would end the process, and a slice not counted
  // done would keep wait() spinning.
  static void take(SliceJob& job) {
    for (int64_t s; (s = job.next.fetch_add(1)) < job.slices;) {
      try {
        job.body(s);
      } catch (...) {
        std::lock_guard<std::mutex> lock(job.failure_mutex);
        if (!job.failure) job.failure = std::current_exception();
      }
      job.done.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::shared_ptr<SliceJob> job_;  // touched by the caller's thread, and under the mutex
  std::vector<at::Tensor> held_;   // touched by the caller's thread only
  std::atomic<int64_t> generation_{0}, sleepers_{0};
  bool stopped_ = false;
};

// With o.slices > 1 the batch is cut into that many slices, each unrolled whole by one thread: no per-step
// synchronisation, which is what small traces need. Each slice sums dL/dalpha into its own buffer and the buffers
// are added in slice order, so the result does not depend on the number of threads. With `job`, a forward's slices
// are left to it (a ForwardWorker runs them).
template <typename S, int MODE, int RULE, bool CLIP>
double run(bool backward, const Options& o, const Buffers<S>& p, SliceJob* job) {
  auto unroll = [&](const Options& options, const Buffers<S>& buffers) {
    return backward ? run_backward<S, MODE, RULE, CLIP>(options, buffers)
                    : run_forward<S, MODE, RULE, CLIP>(options, buffers);
  };
  const int64_t B = o.sizes.B, N = o.sizes.N, NN = N * N, slices = std::min(o.slices, B);
  if (o.sizes.phase == kRedoResets) {
    // The product of step `first` again, for each element that starts an episode there, alone: its pending update
    // is already in its trace (the pre-reset trace); the reset, its checkpoint and its product are redone.
    for (int64_t b = 0; b < B; ++b) {
      if (!p.starts || !p.starts[o.sizes.first * o.sizes.stride + b]) continue;
      Options one = o;
      one.sizes.B = 1;
      one.sizes.sliced = true;
      one.sizes.phase = kProduct;
      one.sizes.pending = false;
      unroll(one, p.from(b, o.sizes, kForwardLayout));
    }
    return 0;
  }
  if (job) {
    TORCH_CHECK(!backward && slices > 1, "plastic unroll: only a sliced forward runs on a ForwardWorker");
    job->slices = slices;
    job->body = [o, p, B, slices](int64_t s) {
      const int64_t b0 = s * B / slices, b1 = (s + 1) * B / slices;
      Options slice = o;
      slice.sizes.B = b1 - b0;
      slice.sizes.sliced = true;
      run_forward<S, MODE, RULE, CLIP>(slice, p.from(b0, slice.sizes, kForwardLayout));
    };
    return 0;
  }
  if (slices <= 1) return unroll(o, p);
  S* grad_alpha = backward && MODE == kFull ? p.data[kGradAlpha] : nullptr;
  std::vector<S> alpha_parts(grad_alpha ? (slices - 1) * NN : 0, S(0));
  std::vector<double> results(slices, 0.0);
  std::atomic<int64_t> next{0};
  const int64_t steps = backward ? o.sizes.T : std::max<int64_t>(1, o.sizes.last - o.sizes.first);
  const int64_t work = o.sizes.phase == kActivation ? 0 : steps * B * NN;  // an activation alone is B x N
  const int64_t threads = work < kParallelWork ? 1 : std::min<int64_t>(slices, at::get_num_threads());
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t s; (s = next.fetch_add(1)) < slices;) {
      const int64_t b0 = s * B / slices, b1 = (s + 1) * B / slices;
      Options slice = o;
      slice.sizes.B = b1 - b0;
      slice.sizes.sliced = true;
      Buffers<S> buffers = p.from(b0, o.sizes, backward ? kBackwardLayout : kForwardLayout);
      if (grad_alpha && s > 0) buffers.data[kGradAlpha] = alpha_parts.data() + (s - 1) * NN;
      results[s] = unroll(slice, buffers);
    }
  });
  for (int64_t s = 1; s < slices && grad_alpha; ++s) {
    const S* part = alpha_parts.data() + (s - 1) * NN;
    for (int64_t k = 0; k < NN; ++k) grad_alpha[k] += part[k];
  }
  double total = 0;
  for (double result : results) total += result;
  return total;
}

template <typename S, int MODE, int RULE>
double run_rule(bool backward, const Options& o, const Buffers<S>& p, SliceJob* job) {
  return o.clip > 0 ? run<S, MODE, RULE, true>(backward, o, p, job) : run<S, MODE, RULE, false>(backward, o, p, job);
}

template <typename S, int MODE>
double run_plastic(bool backward, int64_t rule, const Options& o, const Buffers<S>& p, SliceJob* job) {
  switch (rule) {
    case kHebb:
      return run_rule<S, MODE, kHebb>(backward, o, p, job);
    case kOja:
      return run_rule<S, MODE, kOja>(backward, o, p, job);
    case kNeuromod:
      return run_rule<S, MODE, kNeuromod>(backward, o, p, job);
    default:
      return run_rule<S, MODE, kRetroneuromod>(backward, o, p, job);
  }
}

double dispatch(bool backward, const std::vector<at::Tensor>& tensors, const at::Tensor& starts,
                const at::Tensor& pre_reset_index, const at::Tensor& clip_flags, int64_t plasticity, int64_t rule,
                const Options& o, SliceJob* job = nullptr) {
  const auto dtype = tensors[backward ? 2 : 0].scalar_type();
  for (const auto& x : tensors) {
    if (!x.defined() || x.numel() == 0) continue;
    TORCH_CHECK(x.device().is_cpu(), "the C++ plastic unroll runs on the CPU only");
    TORCH_CHECK(x.is_contiguous(), "the C++ plastic unroll needs contiguous tensors");
    TORCH_CHECK(x.scalar_type() == dtype, "the C++ plastic unroll needs tensors of one floating dtype");
  }
  double result = 0;
  AT_DISPATCH_FLOATING_TYPES(dtype, "plastic_unroll", [&] {
    const Buffers<scalar_t> p(tensors, starts, pre_reset_index, clip_flags);
    if (plasticity == kNone) {
      result = run<scalar_t, kNone, kHebb, false>(backward, o, p, job);
    } else if (plasticity == kShared) {
      result = run_plastic<scalar_t, kShared>(backward, rule, o, p, job);
    } else {
      result = run_plastic<scalar_t, kFull>(backward, rule, o, p, job);
    }
  });
  return result;
}

// Shape checks of every buffer the kernels are handed: they index raw pointers with T, B and N taken from the drive,
// so a buffer of any other shape would be read or written past its end. No caller, Python or C++, gets around them.
enum class Presence { kRequired, kOptional };

void check_buffer(const at::Tensor& x, const char* name, at::IntArrayRef shape, Presence presence) {
  if (presence == Presence::kOptional && (!x.defined() || x.numel() == 0)) return;
  TORCH_CHECK(x.defined(), "plastic unroll: ", name, " is required");
  TORCH_CHECK(x.sizes() == shape, "plastic unroll: ", name, " must have shape ", shape, "; got ", x.sizes());
}

// starts (T, B) bool and pre_reset_index (T, B) int64 with every slot in [-1, slots).
void check_reset_buffers(const at::Tensor& starts, const at::Tensor& pre_reset_index, int64_t T, int64_t B,
                         int64_t slots) {
  if (starts.defined() && starts.numel()) {
    TORCH_CHECK(starts.scalar_type() == at::kBool && starts.device().is_cpu() && starts.is_contiguous(),
                "plastic unroll: episode starts must be a contiguous CPU bool tensor");
    check_buffer(starts, "episode starts", {T, B}, Presence::kRequired);
  }
  if (pre_reset_index.defined() && pre_reset_index.numel()) {
    TORCH_CHECK(pre_reset_index.scalar_type() == at::kLong && pre_reset_index.device().is_cpu() &&
                    pre_reset_index.is_contiguous(),
                "plastic unroll: pre_reset_index must be a contiguous CPU int64 tensor");
    check_buffer(pre_reset_index, "pre_reset_index", {T, B}, Presence::kRequired);
    const int64_t lowest = pre_reset_index.min().item<int64_t>(), highest = pre_reset_index.max().item<int64_t>();
    TORCH_CHECK(lowest >= -1 && highest < slots, "plastic unroll: pre_reset_index must lie in [-1, ", slots,
                "); got [", lowest, ", ", highest, "]");
  }
}

// clip_flags (segments, B, N, (N + 7) / 8) uint8, segments = (T - 1) / every + 1: see flag_clipped. Only with a clip.
void check_clip_flags(const at::Tensor& flags, double clip, int64_t T, int64_t B, int64_t N, int64_t every) {
  if (!flags.defined() || flags.numel() == 0) return;
  TORCH_CHECK(clip > 0, "plastic unroll: clip flags are for a clipped trace only");
  TORCH_CHECK(flags.scalar_type() == at::kByte && flags.device().is_cpu() && flags.is_contiguous(),
              "plastic unroll: clip flags must be a contiguous CPU uint8 tensor");
  check_buffer(flags, "clip flags", {(T - 1) / every + 1, B, N, (N + 7) / 8}, Presence::kRequired);
}

// The checks both kernels share: the parameters and the plasticity-dependent buffers, given the sizes.
void check_parameters(const at::Tensor& weight, const at::Tensor& alpha, int64_t plasticity, int64_t N) {
  check_buffer(weight, "weight", {N, N}, Presence::kRequired);
  if (plasticity == kFull) check_buffer(alpha, "alpha", {N, N}, Presence::kRequired);
  if (plasticity == kShared) check_buffer(alpha, "alpha", {1}, Presence::kRequired);
}

// K, the outputs of the neuromodulator head, for a plastic unroll of a neuromodulated rule (else 0); its weight is
// (N, K) with K = 1 or N.
int64_t modulator_outputs(const at::Tensor& weight, int64_t plasticity, int64_t rule, int64_t N) {
  if (plasticity == kNone || (rule != kNeuromod && rule != kRetroneuromod)) return 0;
  TORCH_CHECK(weight.defined() && weight.dim() == 2 && weight.size(0) == N && (weight.size(1) == 1 || weight.size(1) == N),
              "plastic unroll: the modulator's weight must have shape (N, 1) or (N, N)");
  return weight.size(1);
}

// Presence of a neuromodulated rule's buffers: those of M(t) where K > 0, E's where the rule is gated too.
Presence modulated_presence(int64_t K) { return K ? Presence::kRequired : Presence::kOptional; }
Presence gated_presence(int64_t K, int64_t rule) {
  return K && rule == kRetroneuromod ? Presence::kRequired : Presence::kOptional;
}

// The checks both entries start with: the argument count, the modes, and the sizes T, B, N read from the drive.
Sizes checked_sizes(const std::vector<at::Tensor>& tensors, size_t expected_count, size_t drive_index,
                    int64_t plasticity, int64_t rule, int64_t every, int64_t slices) {
  TORCH_CHECK(tensors.size() == expected_count, "plastic unroll: expected ", expected_count, " tensors; got ",
              tensors.size());
  TORCH_CHECK(plasticity >= kNone && plasticity <= kFull, "unknown plasticity mode ", plasticity);
  TORCH_CHECK(rule >= kHebb && rule <= kRetroneuromod, "unknown plasticity rule ", rule);
  const auto& drive = tensors[drive_index];
  TORCH_CHECK(drive.defined() && drive.dim() == 3, "plastic unroll: drive must have shape (T, B, N)");
  TORCH_CHECK(every >= 1, "plastic unroll: checkpoint spacing must be >= 1; got ", every);
  TORCH_CHECK(slices >= 1, "plastic unroll: slices must be >= 1; got ", slices);
  return {drive.size(0), drive.size(1), drive.size(2), 0, every, drive.size(1), false, 0, drive.size(0), false, true};
}

// tensors: drive, x0, h0, weight, alpha, bias, reset_activation, then the caller's preallocated outputs and
// buffers: outputs, pre, plastic_part, trace (the final trace on return), checkpoints, pre_reset; then a
// neuromodulated rule's (empty otherwise): e0, eligibility, its checkpoints and pre_reset (a gated rule's E, kept as
// H is), the modulator's weight (N, K) and bias (K), and M(t) (T, B, K). The steps run are [first_step, last_step) of
// the T in the buffers, with the update pending and settle as in Sizes.
void unroll_forward(const std::vector<at::Tensor>& tensors, at::Tensor starts, at::Tensor pre_reset_index,
                    at::Tensor clip_flags, double eta, double clip, int64_t plasticity, int64_t rule, bool clamp_input, bool bias_neuron, int64_t every,
                    int64_t slices, int64_t first_step, int64_t last_step, bool pending, bool settle, int64_t phase,
                    ForwardWorker* worker = nullptr) {
  Sizes sizes = checked_sizes(tensors, kForwardTensors, 0, plasticity, rule, every, slices);
  const int64_t T = sizes.T, B = sizes.B, N = sizes.N;
  TORCH_CHECK(first_step >= 0 && first_step <= last_step && last_step <= T, "plastic unroll: steps [", first_step,
              ", ", last_step, ") must lie in [0, ", T, "]");
  TORCH_CHECK(!pending || first_step >= 1, "plastic unroll: no update can be pending before step 0");
  TORCH_CHECK(phase >= kWholeSteps && phase <= kRedoResets, "plastic unroll: unknown phase ", phase);
  TORCH_CHECK(phase == kWholeSteps || last_step == first_step + 1, "plastic unroll: a phase is of one step");
  TORCH_CHECK(phase != kRedoResets || first_step >= 1, "plastic unroll: no episode starts again at step 0");
  TORCH_CHECK(!worker || phase == kProduct, "plastic unroll: a ForwardWorker runs products only");
  sizes.first = first_step;
  sizes.last = last_step;
  sizes.pending = pending;
  sizes.settle = settle;
  sizes.phase = phase;
  const bool plastic = plasticity != kNone;
  const auto traces = plastic ? Presence::kRequired : Presence::kOptional;
  const int64_t checkpoints = plastic ? (T - 1) / every : 0;
  check_buffer(tensors[1], "x0", {B, N}, Presence::kRequired);
  check_buffer(tensors[2], "h0", {B, N, N}, traces);
  check_parameters(tensors[3], tensors[4], plasticity, N);
  check_buffer(tensors[5], "bias", {N}, Presence::kOptional);
  check_buffer(tensors[6], "reset_activation", {N}, Presence::kRequired);
  check_buffer(tensors[7], "outputs", {T, B, N}, Presence::kRequired);
  check_buffer(tensors[8], "pre", {T, B, N}, Presence::kRequired);
  check_buffer(tensors[9], "plastic_part", {T, B, N},
               plasticity == kShared ? Presence::kRequired : Presence::kOptional);
  check_buffer(tensors[10], "trace", {B, N, N}, traces);
  check_buffer(tensors[11], "checkpoints", {checkpoints, B, N, N},
               checkpoints ? Presence::kRequired : Presence::kOptional);
  const int64_t slots = tensors[12].defined() && tensors[12].numel() ? tensors[12].size(0) : 0;
  check_buffer(tensors[12], "pre_reset", {slots, N, N}, Presence::kOptional);
  check_reset_buffers(starts, pre_reset_index, T, B, slots);
  check_clip_flags(clip_flags, clip, T, B, N, every);
  const int64_t K = sizes.K = modulator_outputs(tensors[17], plasticity, rule, N);
  const Presence gated = gated_presence(K, rule);
  check_buffer(tensors[13], "e0", {B, N, N}, gated);
  check_buffer(tensors[14], "eligibility", {B, N, N}, gated);
  check_buffer(tensors[15], "eligibility checkpoints", {checkpoints, B, N, N},
               checkpoints ? gated : Presence::kOptional);
  check_buffer(tensors[16], "eligibility pre_reset", {slots, N, N}, slots ? gated : Presence::kOptional);
  check_buffer(tensors[18], "the modulator's bias", {K}, modulated_presence(K));
  check_buffer(tensors[19], "modulation", {T, B, K}, modulated_presence(K));
  const Options o{sizes, eta, clip, clamp_input, bias_neuron, false, slices};
  if (!worker) {
    dispatch(false, tensors, starts, pre_reset_index, clip_flags, plasticity, rule, o);
    return;
  }
  auto job = std::make_shared<SliceJob>();
  dispatch(false, tensors, starts, pre_reset_index, clip_flags, plasticity, rule, o, job.get());
  std::vector<at::Tensor> held = tensors;
  held.push_back(starts);
  held.push_back(pre_reset_index);
  held.push_back(clip_flags);
  worker->post(std::move(job), std::move(held));
}

// Step t of a recorded rollout on `worker`: the product of step t (started now unless the previous step started it
// in the background), redone for the episodes that start at t (`redo`: a background product assumed none did), the
// activation; then, with `start_next`, the product of step t + 1 started in the background. Arguments as forward's.
void recorded_step(ForwardWorker& worker, const std::vector<at::Tensor>& tensors, at::Tensor starts,
                   at::Tensor pre_reset_index, at::Tensor clip_flags, double eta, double clip, int64_t plasticity, int64_t rule,
                   bool clamp_input, bool bias_neuron, int64_t every, int64_t slices, int64_t step, bool pending,
                   bool product_started, bool redo, bool start_next) {
  auto forward = [&](int64_t first, bool pending_update, int64_t phase, ForwardWorker* on) {
    unroll_forward(tensors, starts, pre_reset_index, clip_flags, eta, clip, plasticity, rule, clamp_input,
                   bias_neuron, every, slices, first, first + 1, pending_update, false, phase, on);
  };
  TORCH_CHECK(!redo || product_started, "plastic unroll: only a background product is redone");
  if (!product_started) forward(step, pending, kProduct, &worker);
  {
    pybind11::gil_scoped_release no_gil;
    worker.wait();
  }
  if (redo) forward(step, false, kRedoResets, nullptr);
  forward(step, false, kActivation, nullptr);
  if (start_next) forward(step + 1, plasticity != kNone, kProduct, &worker);
}

// tensors: grad_outputs, grad_final_activation, drive, outputs, pre, h0, final_trace, checkpoints, pre_reset,
// weight, alpha, then the outputs: grad_pre_activation, grad_drive, grad_x0, grad_trace (holds dL/dH_T on entry,
// dL/dH_0 on return), grad_alpha (zeroed by the caller), and the workspace; then a neuromodulated rule's (empty
// otherwise): e0, final_eligibility, its checkpoints and pre_reset, the modulator's weight, M(t), and the outputs
// grad_eligibility (as grad_trace, for E), grad_modulation (dL/dz_t of M(t) = tanh(z_t), (T, B, K)) and E's
// workspace (as the workspace). Returns dL/deta.
double unroll_backward(std::vector<at::Tensor> tensors, at::Tensor starts, at::Tensor pre_reset_index,
                       at::Tensor clip_flags, double eta, double clip, int64_t plasticity, int64_t rule, bool clamp_input, bool bias_neuron, int64_t every,
                       int64_t slices, bool reverse) {
  Sizes sizes = checked_sizes(tensors, kBackwardTensors, 2, plasticity, rule, every, slices);
  const int64_t T = sizes.T, B = sizes.B, N = sizes.N;
  const bool plastic = plasticity != kNone;
  const auto traces = plastic ? Presence::kRequired : Presence::kOptional;
  const int64_t checkpoints = plastic ? (T - 1) / every : 0;
  check_buffer(tensors[0], "grad_outputs", {T, B, N}, Presence::kOptional);
  check_buffer(tensors[1], "grad_final_activation", {B, N}, Presence::kOptional);
  check_buffer(tensors[3], "outputs", {T, B, N}, Presence::kRequired);
  check_buffer(tensors[4], "pre", {T, B, N}, Presence::kRequired);
  check_buffer(tensors[5], "h0", {B, N, N}, traces);
  check_buffer(tensors[6], "final_trace", {B, N, N}, traces);
  check_buffer(tensors[7], "checkpoints", {checkpoints, B, N, N},
               checkpoints ? Presence::kRequired : Presence::kOptional);
  const int64_t slots = tensors[8].defined() && tensors[8].numel() ? tensors[8].size(0) : 0;
  check_buffer(tensors[8], "pre_reset", {slots, N, N}, Presence::kOptional);
  check_parameters(tensors[9], tensors[10], plasticity, N);
  check_buffer(tensors[11], "grad_pre_activation", {T, B, N}, Presence::kRequired);
  check_buffer(tensors[12], "grad_drive", {T, B, N}, Presence::kRequired);
  check_buffer(tensors[13], "grad_x0", {B, N}, Presence::kRequired);
  check_buffer(tensors[14], "grad_trace", {B, N, N}, traces);
  check_buffer(tensors[15], "grad_alpha", {N, N}, plasticity == kFull ? Presence::kRequired : Presence::kOptional);
  const int64_t K = sizes.K = modulator_outputs(tensors[21], plasticity, rule, N);
  const Presence gated = gated_presence(K, rule);
  // The reverse rebuild needs one trace of workspace; segment recomputation one per step of a segment but the first.
  if (plastic) {
    for (const auto& [index, presence, name] :
         {std::tuple{16, Presence::kRequired, "workspace"}, std::tuple{25, gated, "eligibility workspace"}}) {
      if (reverse)
        check_buffer(tensors[index], name, {B, N, N}, presence);
      else
        check_buffer(tensors[index], name, {std::max<int64_t>(every - 1, 1), B, N, N}, presence);
    }
  }
  check_buffer(tensors[17], "e0", {B, N, N}, gated);
  check_buffer(tensors[18], "final_eligibility", {B, N, N}, gated);
  check_buffer(tensors[19], "eligibility checkpoints", {checkpoints, B, N, N},
               checkpoints ? gated : Presence::kOptional);
  check_buffer(tensors[20], "eligibility pre_reset", {slots, N, N}, slots ? gated : Presence::kOptional);
  check_buffer(tensors[22], "modulation", {T, B, K}, modulated_presence(K));
  check_buffer(tensors[23], "grad_eligibility", {B, N, N}, gated);
  check_buffer(tensors[24], "grad_modulation", {T, B, K}, modulated_presence(K));
  check_reset_buffers(starts, pre_reset_index, T, B, slots);
  check_clip_flags(clip_flags, clip, T, B, N, every);
  const Options o{sizes, eta, clip, clamp_input, bias_neuron, reverse, slices};
  return dispatch(true, tensors, starts, pre_reset_index, clip_flags, plasticity, rule, o);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def(
      "forward",
      [](const std::vector<at::Tensor>& tensors, at::Tensor starts, at::Tensor pre_reset_index,
         at::Tensor clip_flags, double eta, double clip, int64_t plasticity, int64_t rule, bool clamp_input,
         bool bias_neuron, int64_t every, int64_t slices, int64_t first_step, int64_t last_step, bool pending,
         bool settle) {
        unroll_forward(tensors, starts, pre_reset_index, clip_flags, eta, clip, plasticity, rule, clamp_input,
                       bias_neuron, every, slices, first_step, last_step, pending, settle, kWholeSteps);
      },
      "fused forward unroll of the plastic recurrent layer");
  pybind11::class_<ForwardWorker>(m, "ForwardWorker", "background threads for the product of a rollout's next step")
      .def(pybind11::init<int64_t>(), pybind11::arg("threads"))
      .def("step", &recorded_step, "one step of a recorded rollout, the next step's product started after it")
      .def("wait", &ForwardWorker::wait, pybind11::call_guard<pybind11::gil_scoped_release>(),
           "return when the started product is done, taking part in it");
  m.def("backward", &unroll_backward, "hand-written backward of the fused unroll");
  // The registry (plastic_rl/core/rules.py) names the kernel code of each rule; Python checks this against it.
  m.def(
      "rule_codes",
      [] {
        return std::map<std::string, int64_t>{
            {"hebb", kHebb}, {"oja", kOja}, {"neuromod", kNeuromod}, {"retroneuromod", kRetroneuromod}};
      },
      "the plasticity rules this kernel runs, by name, with their codes");
  m.def(
      "multithreaded",
      [] {
#ifdef _OPENMP
        return true;
#else
        return false;
#endif
      },
      "whether this build runs on torch's threads (built with OpenMP) or on one");
}
