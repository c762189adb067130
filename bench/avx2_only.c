/* LD_PRELOAD shim: the process sees an AVX2-only x86-64 CPU (no AVX-512, VNNI, AMX) by CPUID.
 *
 * ONNX Runtime (MLAS) picks its kernels from CPUID at start and offers no switch to leave out
 * the VNNI/AVX-512 ones. On a CPU with CPUID faulting (/proc/cpuinfo flag `cpuid_fault`), this
 * library makes every CPUID instruction of the process trap (arch_prctl ARCH_SET_CPUID), runs
 * the real CPUID in the SIGSEGV handler and clears the AVX-512, VNNI and AMX bits of the
 * answer, so MLAS dispatches its AVX2 kernels at native speed (qemu's -cpu Haswell also runs
 * them, but emulated: good for accuracy, not for speed). The setting is inherited by threads
 * and forks and reset by execve; LD_PRELOAD in the environment re-arms it in spawned children.
 *
 * Build and use (bench/int8_cpu_paths.py --avx2-only does both):
 *     gcc -O2 -shared -fPIC -o avx2_only.so bench/avx2_only.c
 *     LD_PRELOAD=$PWD/avx2_only.so python ...
 * glibc reads CPUID before any preloaded library runs, so its own string functions keep their
 * AVX-512 versions (set GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F to drop those too); the
 * kernels that matter here are ONNX Runtime's and NumPy's, which ask CPUID later.
 * A process that installs its own SIGSEGV handler loses the emulation and dies at its next
 * CPUID: run pytest under it with `-p no:faulthandler` (Python's faulthandler takes SIGSEGV).
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static int set_cpuid(int enabled) { return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void mask(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31 */
        *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) |
                (1u << 30) | (1u << 31));
        /* ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, AVX512_FP16 23, AMX-TILE 24,
         * AMX-INT8 25 */
        *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) |
                (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: AVX-VNNI 4, AVX512_BF16 5, AMX-FP16 21, AVX-IFMA 23 */
        *a &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        /* EDX: AVX-VNNI-INT8 4, AVX-NE-CONVERT 5, AVX10 19 */
        *d &= ~((1u << 4) | (1u << 5) | (1u << 19));
    } else if (leaf == 0x1d || leaf == 0x1e || leaf == 0x24) {
        *a = *b = *c = *d = 0; /* AMX tile / TMUL and AVX10 description leaves */
    }
}

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    ucontext_t *uc = (ucontext_t *)ctx;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* not CPUID: a real fault, crash as usual */
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX], a, b, c, d;
    set_cpuid(1);
    __cpuid_count(leaf, sub, a, b, c, d);
    set_cpuid(0);
    mask(leaf, sub, &a, &b, &c, &d);
    r[REG_RAX] = a;
    r[REG_RBX] = b;
    r[REG_RCX] = c;
    r[REG_RDX] = d;
    r[REG_RIP] += 2;
    (void)info;
}

__attribute__((constructor)) static void arm(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    if (set_cpuid(0) != 0) {
        fprintf(stderr, "avx2_only: this CPU/kernel has no CPUID faulting; nothing masked\n");
        if (getenv("AVX2_ONLY_REQUIRED")) _exit(3);
    }
}
