/*
 * Waiting for the other side of the simulator's mailbox (sim_protocol.h): poll the sequence
 * number for a while, then sleep on it as a futex (a Linux futex works across processes on a
 * shared mapping). Polling is what makes a round trip cost about a microsecond instead of two
 * scheduler wake-ups; sleeping keeps an idle simulator off the CPU.
 *
 * The sleeping flag closes the lost-wake-up race: a waiter sets it, then re-reads the word; a
 * poster writes the word, then reads the flag (all sequentially consistent), so at least one of
 * them sees the other, and FUTEX_WAIT itself refuses to sleep if the word has already changed.
 */
#ifndef MIRRORC_SIM_DOORBELL_H
#define MIRRORC_SIM_DOORBELL_H

#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Poll with a pause instruction this long, then yield the CPU between polls (a busy host). */
#define MSIM_PAUSE_NS 20000ull
/* Between naps on the futex the waiter checks that the other side still exists. */
#define MSIM_NAP_NS 50000000l
/* Default polling time (overridden by $MIRRORC_SIM_SPIN_US): long enough to bridge the normal
 * world's compute between two calls of a VGG-sized model (a VGG-7 backbone takes 3-5 ms here).
 * A sleeping simulator costs 140-170 us (median) to wake on a 2-vCPU VM, where a board's secure
 * world starts on the calling core. */
#define MSIM_DEFAULT_SPIN_NS 20000000ull

static inline uint32_t msim_load(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline void msim_store(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

static inline void msim_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
	__asm__ __volatile__("yield");
#endif
}

static inline uint64_t msim_now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* Polling time from $MIRRORC_SIM_SPIN_US (0 = sleep at once), else the default. */
static inline uint64_t msim_spin_ns(const char *env)
{
	return env && *env ? strtoull(env, NULL, 10) * 1000ull : MSIM_DEFAULT_SPIN_NS;
}

/* Whether the other side still holds its end of socket `fd` (it closes when it exits or dies). */
static inline int msim_peer_open(int fd)
{
	struct pollfd p = {.fd = fd, .events = 0};
	return !(poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL)));
}

/* Wake whoever sleeps on `word` after setting it to `v`. */
static inline void msim_post(uint32_t *word, uint32_t v, uint32_t *sleeping)
{
	msim_store(word, v);
	if (msim_load(sleeping))
		syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Wait until *word != old: poll for spin_ns, then sleep in naps, asking alive(arg) after each
 * nap whether the other side still exists. 0 when the word changed, -1 when it has gone. */
static inline int msim_wait(uint32_t *word, uint32_t old, uint32_t *sleeping, uint64_t spin_ns,
			    int (*alive)(void *), void *arg)
{
	uint64_t start = msim_now_ns();
	unsigned i = 0;

	while (msim_load(word) == old) {
		if ((++i & 63) == 0) {
			uint64_t spent = msim_now_ns() - start;
			if (spent >= spin_ns)
				break;
			if (spent >= MSIM_PAUSE_NS)
				sched_yield();
		}
		msim_relax();
	}
	while (msim_load(word) == old) {
		struct timespec nap = {0, MSIM_NAP_NS};
		msim_store(sleeping, 1);
		if (msim_load(word) == old)
			syscall(SYS_futex, word, FUTEX_WAIT, old, &nap, NULL, 0);
		msim_store(sleeping, 0);
		if (msim_load(word) == old && !alive(arg))
			return -1;
	}
	return 0;
}

#endif /* MIRRORC_SIM_DOORBELL_H */
