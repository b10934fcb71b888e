/*
 * The TEE Internal Core API functions a mirrorc TA calls, implemented for the host simulator.
 *
 * TEE_Malloc draws from a budget of TA_DATA_SIZE bytes (set by the simulator's main), like the
 * TA heap in OP-TEE, so a TA whose memory plan is too small fails here as it would on a board.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tee_internal_api.h"

/* Heap budget and use, in bytes; 0 = unlimited. Set by ta_sim_main.c from TA_DATA_SIZE. */
size_t msim_heap_limit;
size_t msim_heap_used;
size_t msim_heap_peak;

/* Each block carries its size in front so TEE_Free can return it to the budget. */
typedef union {
	size_t size;
	long double align_ld; /* C99 has no max_align_t */
	void *align_p;
} block_header;

void TEE_Panic(TEE_Result panicCode)
{
	fprintf(stderr, "mirrorc TA simulator: TEE_Panic(0x%08x)\n", (unsigned)panicCode);
	abort();
}

void *TEE_Malloc(size_t size, uint32_t hint)
{
	if (msim_heap_limit && (size > msim_heap_limit || msim_heap_used + size > msim_heap_limit))
		return NULL;
	block_header *h = malloc(sizeof(*h) + (size ? size : 1));
	if (!h)
		return NULL;
	h->size = size;
	msim_heap_used += size;
	if (msim_heap_used > msim_heap_peak)
		msim_heap_peak = msim_heap_used;
	if (!(hint & TEE_MALLOC_NO_FILL))
		memset(h + 1, 0, size);
	return h + 1;
}

void TEE_Free(void *buffer)
{
	if (!buffer)
		return;
	block_header *h = (block_header *)buffer - 1;
	msim_heap_used -= h->size;
	free(h);
}

void *TEE_Realloc(void *buffer, size_t newSize)
{
	if (!buffer)
		return TEE_Malloc(newSize, TEE_MALLOC_FILL_ZERO);
	block_header *h = (block_header *)buffer - 1;
	size_t old = h->size;
	void *fresh = TEE_Malloc(newSize, TEE_MALLOC_NO_FILL);
	if (!fresh)
		return NULL;
	memcpy(fresh, buffer, old < newSize ? old : newSize);
	TEE_Free(buffer);
	return fresh;
}

void TEE_MemMove(void *dest, const void *src, size_t size)
{
	memmove(dest, src, size);
}

/* Constant time in the contents, as the GP spec asks. */
int32_t TEE_MemCompare(const void *buffer1, const void *buffer2, size_t size)
{
	const unsigned char *a = buffer1, *b = buffer2;
	int32_t result = 0;
	for (size_t i = size; i-- > 0;) {
		int32_t d = (int32_t)a[i] - (int32_t)b[i];
		if (d)
			result = d;
	}
	return result;
}

void TEE_MemFill(void *buff, uint32_t x, size_t size)
{
	memset(buff, (int)(x & 0xFF), size);
}
