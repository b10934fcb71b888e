/*
 * libFuzzer harness for a mirrorc TA: the entry points (mirrorc_ta.c), the generated model and
 * kernels and the GP Internal API shim (tee_internal_sim.c), linked with -fsanitize=fuzzer,
 * address,undefined. Build it with the TA's include path and
 *   -DMIRRORC_FUZZ_TA_HEADER='"<name>_ta.h"'
 * (tests/test_ta_fuzz.py does; see mirrorc's docs/RESULTS.md for the figures).
 *
 * An input is a script of calls on up to FUZZ_SESSIONS sessions: opens and closes, and invokes of
 * any command (the TA's, unknown ones, raw 32-bit IDs) with any parameter types, memref sizes
 * (exact, off by a few, 0, up to 2^64-1) and contents (any float, NaN and Inf included). A memref
 * with a buffer always has the bytes it declares, as the simulator and OP-TEE guarantee; larger
 * declared sizes travel as NULL memrefs, as they do there. The protocol oracle aborts (a finding)
 * when:
 *   - a refusal is not one of BAD_PARAMETERS, BAD_STATE, NOT_SUPPORTED;
 *   - after any refusal the stream is not reset (a valid FINAL must then be BAD_STATE);
 *   - a label leaves [0, K);
 *   - at the end of the input, a valid TAP..FINAL sequence on each used session does not give the
 *     same label as on a fresh session, or SINGLE disagrees with the stream;
 *   - the TA's heap is not back to zero once every session is closed.
 * The sanitizers catch memory errors and undefined behaviour; libFuzzer, crashes and hangs.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tee_internal_api.h"
#include "user_ta_header.h"
#include "user_ta_header_defines.h"
#include MIRRORC_FUZZ_TA_HEADER

#define FUZZ_SESSIONS 3
#define FUZZ_MAX_BUFFER 65536 /* larger declared sizes are NULL memrefs (size only) */

extern size_t msim_heap_limit;
extern size_t msim_heap_used;

static const uint32_t tap_bytes[MIRRORC_TA_NUM_TAPS] = MIRRORC_TA_TAP_BYTES;

/* The input, consumed front to back; reads past the end give zeros. */
struct cursor {
	const uint8_t *p;
	size_t n;
};

static uint8_t take8(struct cursor *c)
{
	if (!c->n)
		return 0;
	c->n--;
	return *c->p++;
}

static uint32_t take32(struct cursor *c)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v = v << 8 | take8(c);
	return v;
}

static uint64_t take64(struct cursor *c)
{
	return (uint64_t)take32(c) << 32 | take32(c);
}

static void fail(const char *what, uint32_t a, uint32_t b)
{
	fprintf(stderr, "ta_fuzz: protocol oracle: %s (0x%08x, 0x%08x)\n", what, (unsigned)a, (unsigned)b);
	abort();
}

static TEE_Result invoke(void *s, uint32_t cmd, uint32_t types, TEE_Param params[4])
{
	return TA_InvokeCommandEntryPoint(s, cmd, types, params);
}

static const uint32_t in_types = TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT, TEE_PARAM_TYPE_NONE,
						  TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE);
static const uint32_t label_types = TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT,
						     TEE_PARAM_TYPE_VALUE_OUTPUT, TEE_PARAM_TYPE_NONE,
						     TEE_PARAM_TYPE_NONE);

/* A valid stream (taps then logits, from `single`, the SINGLE layout) on session s: its label,
 * or aborts when a valid call is refused. */
static uint32_t valid_stream(void *s, const float *single)
{
	TEE_Param params[4];
	const float *at = single;
	TEE_Result res;

	for (uint32_t k = 0; k < MIRRORC_TA_NUM_TAPS; k++) {
		memset(params, 0, sizeof(params));
		params[0].memref.buffer = (void *)at;
		params[0].memref.size = tap_bytes[k];
		res = invoke(s, MIRRORC_CMD_TAP(k), in_types, params);
		if (res != TEE_SUCCESS)
			fail("a valid tap was refused", k, res);
		at += tap_bytes[k] / 4;
	}
	memset(params, 0, sizeof(params));
	params[0].memref.buffer = (void *)at;
	params[0].memref.size = MIRRORC_TA_LOGITS_BYTES;
	res = invoke(s, MIRRORC_CMD_FINAL, label_types, params);
	if (res != TEE_SUCCESS)
		fail("a valid FINAL was refused", res, 0);
	if (params[1].value.a >= MIRRORC_TA_LOGITS_BYTES / 4)
		fail("label out of range", params[1].value.a, 0);
	return params[1].value.a;
}

static uint32_t valid_single(void *s, const float *single)
{
	TEE_Param params[4];
	memset(params, 0, sizeof(params));
	params[0].memref.buffer = (void *)single;
	params[0].memref.size = MIRRORC_TA_SINGLE_BYTES;
	TEE_Result res = invoke(s, MIRRORC_CMD_SINGLE, label_types, params);
	if (res != TEE_SUCCESS)
		fail("a valid SINGLE was refused", res, 0);
	return params[1].value.a;
}

/* After a refusal the stream must be over: a valid FINAL is too early. */
static void check_reset(void *s, const float *single)
{
	TEE_Param params[4];
	memset(params, 0, sizeof(params));
	params[0].memref.buffer = (void *)(single + (MIRRORC_TA_SINGLE_BYTES - MIRRORC_TA_LOGITS_BYTES) / 4);
	params[0].memref.size = MIRRORC_TA_LOGITS_BYTES;
	TEE_Result res = invoke(s, MIRRORC_CMD_FINAL, label_types, params);
	if (res != TEE_ERROR_BAD_STATE)
		fail("a refusal did not reset the stream", res, 0);
}

/* One fuzzed invoke on session s. */
static void fuzz_invoke(void *s, struct cursor *c, const float *single)
{
	TEE_Param params[4];
	void *buffers[4] = {NULL, NULL, NULL, NULL};
	uint32_t cmd, types;
	uint8_t how = take8(c);

	switch (how % 6) { /* mostly the TA's commands, so that deep states are reached */
	case 0:
	case 1:
		cmd = MIRRORC_CMD_TAP(take8(c) % (MIRRORC_TA_NUM_TAPS + 1));
		break;
	case 2:
		cmd = MIRRORC_CMD_FINAL;
		break;
	case 3:
		cmd = MIRRORC_CMD_SINGLE;
		break;
	default:
		cmd = take32(c);
	}
	types = (how & 0x40) ? take32(c) & 0xFFFF
			     : (cmd == MIRRORC_CMD_FINAL || cmd == MIRRORC_CMD_SINGLE ? label_types : in_types);
	memset(params, 0, sizeof(params));
	for (int i = 0; i < 4; i++) {
		uint32_t t = TEE_PARAM_TYPE_GET(types, i);
		if (t == TEE_PARAM_TYPE_VALUE_INPUT || t == TEE_PARAM_TYPE_VALUE_OUTPUT ||
		    t == TEE_PARAM_TYPE_VALUE_INOUT) {
			params[i].value.a = take32(c);
			params[i].value.b = take32(c);
		} else if (t >= TEE_PARAM_TYPE_MEMREF_INPUT && t <= TEE_PARAM_TYPE_MEMREF_INOUT) {
			uint8_t size_kind = take8(c);
			uint64_t want = cmd == MIRRORC_CMD_FINAL    ? MIRRORC_TA_LOGITS_BYTES
					: cmd == MIRRORC_CMD_SINGLE ? MIRRORC_TA_SINGLE_BYTES
					: cmd - MIRRORC_CMD_TAP(0) < MIRRORC_TA_NUM_TAPS
					    ? tap_bytes[cmd - MIRRORC_CMD_TAP(0)]
					    : 16;
			uint64_t size;
			switch (size_kind % 5) {
			case 0:
			case 1:
				size = want;
				break;
			case 2:
				size = want + (int8_t)take8(c); /* off by a little, either way */
				break;
			case 3:
				size = take64(c); /* anything, up to 2^64-1 */
				break;
			default:
				size = take32(c) % 1024;
			}
			params[i].memref.size = (size_t)size;
			if (!(size_kind & 0x80) && size <= FUZZ_MAX_BUFFER) {
				/* exactly `size` bytes, so ASan sees any read past them */
				buffers[i] = malloc(size ? size : 1);
				uint8_t *b = buffers[i];
				for (uint64_t j = 0; j < size; j++)
					b[j] = c->n ? take8(c) : ((const uint8_t *)single)[j % MIRRORC_TA_SINGLE_BYTES];
				params[i].memref.buffer = buffers[i];
			}
		}
	}
	TEE_Result res = invoke(s, cmd, types, params);
	if (res == TEE_SUCCESS) {
		if ((cmd == MIRRORC_CMD_FINAL || cmd == MIRRORC_CMD_SINGLE) &&
		    params[1].value.a >= MIRRORC_TA_LOGITS_BYTES / 4)
			fail("label out of range", params[1].value.a, cmd);
	} else {
		if (res != TEE_ERROR_BAD_PARAMETERS && res != TEE_ERROR_BAD_STATE &&
		    res != TEE_ERROR_NOT_SUPPORTED)
			fail("unexpected refusal", res, cmd);
		check_reset(s, single);
	}
	for (int i = 0; i < 4; i++)
		free(buffers[i]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	msim_heap_limit = TA_DATA_SIZE;
	if (TA_CreateEntryPoint() != TEE_SUCCESS)
		fail("TA_CreateEntryPoint failed", 0, 0);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static float single[MIRRORC_TA_SINGLE_BYTES / 4];
	void *sessions[FUZZ_SESSIONS] = {NULL};
	struct cursor c = {data, size};
	TEE_Param none[4];

	/* the reference input: the first bytes as floats (any value), then a fixed pattern */
	for (size_t i = 0; i < MIRRORC_TA_SINGLE_BYTES / 4; i++) {
		uint32_t bits = i < size / 4 ? (uint32_t)data[4 * i] | (uint32_t)data[4 * i + 1] << 8 |
						       (uint32_t)data[4 * i + 2] << 16 | (uint32_t)data[4 * i + 3] << 24
					     : 0x3f000000u + 0x1000u * (uint32_t)i;
		memcpy(&single[i], &bits, 4);
	}
	memset(none, 0, sizeof(none));
	for (int steps = 0; c.n && steps < 256; steps++) {
		uint8_t op = take8(&c);
		int k = (op >> 4) % FUZZ_SESSIONS;
		if ((op & 0xF) == 0) { /* close, or open with any parameter types */
			if (sessions[k]) {
				TA_CloseSessionEntryPoint(sessions[k]);
				sessions[k] = NULL;
			} else {
				uint32_t types = (op & 0x8) ? take32(&c) & 0xFFFF : 0;
				TEE_Result res = TA_OpenSessionEntryPoint(types, none, &sessions[k]);
				if (res != TEE_SUCCESS)
					sessions[k] = NULL;
				if (res == TEE_SUCCESS && types != 0)
					fail("a session opened with parameters", types, 0);
			}
		} else if (sessions[k]) {
			fuzz_invoke(sessions[k], &c, single);
		}
	}

	/* after any garbage, a valid sequence gives what a fresh session gives */
	void *fresh = NULL;
	if (TA_OpenSessionEntryPoint(0, none, &fresh) != TEE_SUCCESS)
		fail("a fresh session could not be opened", 0, 0);
	uint32_t want = valid_stream(fresh, single);
	if (valid_single(fresh, single) != want)
		fail("SINGLE and the stream disagree", want, 0);
	for (int k = 0; k < FUZZ_SESSIONS; k++) {
		if (!sessions[k])
			continue;
		TEE_Param params[4];
		memset(params, 0, sizeof(params));
		if (invoke(sessions[k], 0xFFFFFFFFu, 0, params) != TEE_ERROR_NOT_SUPPORTED)
			fail("an unknown command was not NOT_SUPPORTED", 0, 0);
		uint32_t label = valid_stream(sessions[k], single);
		if (label != want)
			fail("label after garbage differs from a fresh session's", label, want);
		TA_CloseSessionEntryPoint(sessions[k]);
	}
	TA_CloseSessionEntryPoint(fresh);
	if (msim_heap_used != 0)
		fail("TA heap not freed after every session closed", (uint32_t)msim_heap_used, 0);
	return 0;
}
