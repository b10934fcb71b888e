/*
 * libFuzzer harness for a mirrorc TA: the entry points (mirrorc_ta.c), the generated model and
 * kernels and the GP Internal API shim (tee_internal_sim.c), linked with -fsanitize=fuzzer,
 * address,undefined. Build it with the TA's include path and
 *   -DMIRRORC_FUZZ_TA_HEADER='"<name>_ta.h"' -DMIRRORC_FUZZ_MAX_SESSIONS=<sessions the heap holds>
 * (mirrorc.backend.ta.build_fuzzer does; see mirrorc's docs/RESULTS.md for the figures). Meant for a
 * TA with every defence on (benchmarks/ta_fuzz.py, tests/test_ta_fuzz.py), it also runs on one
 * with any of them off. The query budget's counter lives under $MIRRORC_TA_STORAGE (else a
 * temporary directory, removed at exit).
 *
 * An input is a script of calls on up to FUZZ_SESSIONS sessions: opens (as one of FUZZ_IDENTITIES
 * client identities: the allowed one, the same login with another UUID, another login, public)
 * and closes, moves of the TA's clock (forward, or back), and invokes of any command (the TA's,
 * unknown ones, raw 32-bit IDs) with any parameter types, memref sizes (exact, off by a few, 0, up
 * to 2^64-1) and contents (any float, NaN and Inf included, or a valid input with a few floats
 * changed), among them many well-formed SINGLEs and streams, so that the defences are met often.
 * A memref with a buffer always has the bytes it declares, as the simulator and OP-TEE guarantee;
 * larger declared sizes travel as NULL memrefs, as they do there. Each input starts with the
 * query counter at a few queries below the budget (or corrupt). The protocol oracle
 * aborts (a finding) when:
 *   - a refusal is not one of BAD_PARAMETERS, BAD_STATE, NOT_SUPPORTED, or a defence's code where
 *     that defence must refuse; the defences are modelled here from the plan (the range per class,
 *     a token bucket, the lifetime counter): FINAL and SINGLE that reach them must get exactly
 *     the model's answer (a label, or the refusal of the first defence that says no);
 *   - a session open does not get exactly BAD_PARAMETERS (parameters), the client-identity
 *     refusal (not the allowed client), the session-cap refusal (the identity holds its cap), or
 *     a session (OUT_OF_MEMORY only when the heap holds its sessions); a client ever holds more
 *     sessions than the cap;
 *   - anything leaves but the label: a refused call changes any parameter or buffer, an answered
 *     one anything but the label's value (label in [0, K), value.b = 0);
 *   - after any refusal the stream is not reset (a valid FINAL must then be BAD_STATE);
 *   - the stored query counter differs from the answers counted at the end of the input;
 *   - at the end of the input, a valid TAP..FINAL sequence on each open session does not give the
 *     same label as on a fresh session, or SINGLE disagrees with the stream;
 *   - the TA's heap is not back to zero once every session is closed.
 * The sanitizers catch memory errors and undefined behaviour; libFuzzer, crashes and hangs.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tee_internal_api.h"
#include "user_ta_header.h"
#include "user_ta_header_defines.h"
#include MIRRORC_FUZZ_TA_HEADER

#define FUZZ_SESSIONS 4
#define FUZZ_IDENTITIES 4
#define FUZZ_MAX_BUFFER 65536 /* larger declared sizes are NULL memrefs (size only) */
#define NUM_CLASSES (MIRRORC_TA_LOGITS_BYTES / 4)
#define SINGLE_FLOATS (MIRRORC_TA_SINGLE_BYTES / 4)

extern size_t msim_heap_limit;
extern size_t msim_heap_used;
extern TEE_Identity msim_client_identity;
extern int msim_clock_fixed;
extern uint64_t msim_fixed_time_ms;

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

/* ---- the model of the defences ------------------------------------------------------------- */

static TEE_Identity identities[FUZZ_IDENTITIES];

static int allowed(int ident)
{
#if MIRRORC_TA_ALLOW_CLIENT
	static const TEE_UUID allowed_uuid = MIRRORC_TA_ALLOW_UUID;
	const TEE_Identity *id = &identities[ident];
	return id->login == MIRRORC_TA_ALLOW_LOGIN &&
	       (MIRRORC_TA_ALLOW_ANY_UUID || memcmp(&id->uuid, &allowed_uuid, sizeof(allowed_uuid)) == 0);
#else
	(void)ident;
	return 1;
#endif
}

static int logits_in_range(const float *logits)
{
#if MIRRORC_TA_RANGE_CHECK
	static const float lo[NUM_CLASSES] = MIRRORC_TA_LOGIT_MIN, hi[NUM_CLASSES] = MIRRORC_TA_LOGIT_MAX;
	for (int k = 0; k < NUM_CLASSES; k++)
		if (!(logits[k] >= lo[k] && logits[k] <= hi[k]))
			return 0;
#else
	(void)logits;
#endif
	return 1;
}

#if MIRRORC_TA_RATE_LIMIT
/* Labels the bucket holds, in thousandths; full at start, as the TA's. Kept across inputs, as the
 * TA's static bucket is: each input starts by moving the clock past a full refill. */
static uint64_t model_tokens = 1000 * MIRRORC_TA_RATE_BURST, model_rate_last;
static int model_rate_started;
#endif
#if MIRRORC_TA_QUERY_BUDGET
static const char budget_object_id[] = "mirrorc.queries"; /* the TA's object (mirrorc_ta.c.in) */
static uint64_t model_used;
static int model_counter_corrupt;
static char storage_made[64]; /* a directory made here when $MIRRORC_TA_STORAGE is unset */
#endif

/* What FINAL or SINGLE with these backbone logits must get once its parameters and the stream
 * state are valid: the first defence that refuses, in the TA's order (range, rate, budget), or
 * TEE_SUCCESS; the model spends what the TA spends. */
static TEE_Result model_answer(const float *logits)
{
	if (!logits_in_range(logits))
		return MIRRORC_TA_ERROR_LOGIT_RANGE;
#if MIRRORC_TA_RATE_LIMIT
	uint64_t now = msim_fixed_time_ms, elapsed;
	if (!model_rate_started || now < model_rate_last) { /* the clock went back: no refill */
		model_rate_last = now;
		model_rate_started = 1;
	}
	elapsed = now - model_rate_last;
	if (elapsed > 1000 * MIRRORC_TA_RATE_BURST)
		elapsed = 1000 * MIRRORC_TA_RATE_BURST;
	model_tokens += elapsed * MIRRORC_TA_RATE_LIMIT;
	if (model_tokens > 1000 * MIRRORC_TA_RATE_BURST)
		model_tokens = 1000 * MIRRORC_TA_RATE_BURST;
	model_rate_last = now;
	if (model_tokens < 1000)
		return MIRRORC_TA_ERROR_RATE_LIMIT;
	model_tokens -= 1000;
#endif
#if MIRRORC_TA_QUERY_BUDGET
	if (model_counter_corrupt)
		return TEE_ERROR_CORRUPT_OBJECT;
	if (model_used >= MIRRORC_TA_QUERY_BUDGET)
		return MIRRORC_TA_ERROR_QUERY_BUDGET;
	model_used++;
#endif
	return TEE_SUCCESS;
}

/* Time enough for the bucket to be full again at the next answer: past its last refill (the clock
 * may have gone back since; the TA then refills nothing). */
static void refill_rate(void)
{
#if MIRRORC_TA_RATE_LIMIT
	if (msim_fixed_time_ms < model_rate_last)
		msim_fixed_time_ms = model_rate_last;
	msim_fixed_time_ms += 1000 * MIRRORC_TA_RATE_BURST + 1;
#endif
}

#if MIRRORC_TA_QUERY_BUDGET
/* Store the TA's query counter: `used`, or with `corrupt` 3 bytes that are no count. */
static void set_counter(uint64_t used, int corrupt)
{
	const uint32_t flags = TEE_DATA_FLAG_ACCESS_READ | TEE_DATA_FLAG_ACCESS_WRITE | TEE_DATA_FLAG_OVERWRITE;
	TEE_ObjectHandle obj;
	if (TEE_CreatePersistentObject(TEE_STORAGE_PRIVATE, budget_object_id, sizeof(budget_object_id) - 1,
				       flags, TEE_HANDLE_NULL, &used, corrupt ? 3 : sizeof(used), &obj) != TEE_SUCCESS)
		fail("cannot write the query counter (storage)", 0, 0);
	TEE_CloseObject(obj);
	model_used = used;
	model_counter_corrupt = corrupt;
}

static void check_counter(void)
{
	TEE_ObjectHandle obj;
	uint64_t used = 0;
	size_t got = 0;
	if (model_counter_corrupt)
		return;
	if (TEE_OpenPersistentObject(TEE_STORAGE_PRIVATE, budget_object_id, sizeof(budget_object_id) - 1,
				     TEE_DATA_FLAG_ACCESS_READ, &obj) != TEE_SUCCESS)
		fail("the query counter is gone", 0, 0);
	TEE_ReadObjectData(obj, &used, sizeof(used), &got);
	TEE_CloseObject(obj);
	if (got != sizeof(used) || used != model_used)
		fail("the query counter differs from the answers given", (uint32_t)used, (uint32_t)model_used);
}

static void remove_storage(void)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/6d6972726f72632e71756572696573", storage_made); /* the ID in hex */
	unlink(path);
	rmdir(storage_made);
}
#endif

/* ---- calls -------------------------------------------------------------------------------- */

static TEE_Result invoke(void *s, uint32_t cmd, uint32_t types, TEE_Param params[4])
{
	return TA_InvokeCommandEntryPoint(s, cmd, types, params);
}

static const uint32_t in_types = TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT, TEE_PARAM_TYPE_NONE,
						  TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE);
static const uint32_t label_types = TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT,
						     TEE_PARAM_TYPE_VALUE_OUTPUT, TEE_PARAM_TYPE_NONE,
						     TEE_PARAM_TYPE_NONE);

static void check_label(const TEE_Param *label)
{
	if (label->value.a >= NUM_CLASSES)
		fail("label out of range", label->value.a, 0);
	if (label->value.b != 0)
		fail("something beside the label left (value.b)", label->value.b, 0);
}

/* A valid stream (taps then logits, from `single`, the SINGLE layout) on session s: its label,
 * or aborts when a valid call is refused. The bucket is refilled first. */
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
	refill_rate();
	if (model_answer(at) != TEE_SUCCESS)
		fail("the model refuses a valid FINAL (budget not reset?)", 0, 0);
	memset(params, 0, sizeof(params));
	params[0].memref.buffer = (void *)at;
	params[0].memref.size = MIRRORC_TA_LOGITS_BYTES;
	res = invoke(s, MIRRORC_CMD_FINAL, label_types, params);
	if (res != TEE_SUCCESS)
		fail("a valid FINAL was refused", res, 0);
	check_label(&params[1]);
	return params[1].value.a;
}

static uint32_t valid_single(void *s, const float *single)
{
	TEE_Param params[4];
	refill_rate();
	if (model_answer(single + SINGLE_FLOATS - NUM_CLASSES) != TEE_SUCCESS)
		fail("the model refuses a valid SINGLE (budget not reset?)", 0, 0);
	memset(params, 0, sizeof(params));
	params[0].memref.buffer = (void *)single;
	params[0].memref.size = MIRRORC_TA_SINGLE_BYTES;
	TEE_Result res = invoke(s, MIRRORC_CMD_SINGLE, label_types, params);
	if (res != TEE_SUCCESS)
		fail("a valid SINGLE was refused", res, 0);
	check_label(&params[1]);
	return params[1].value.a;
}

/* After a refusal the stream must be over: a valid FINAL is too early. */
static void check_reset(void *s, const float *single)
{
	TEE_Param params[4];
	memset(params, 0, sizeof(params));
	params[0].memref.buffer = (void *)(single + SINGLE_FLOATS - NUM_CLASSES);
	params[0].memref.size = MIRRORC_TA_LOGITS_BYTES;
	TEE_Result res = invoke(s, MIRRORC_CMD_FINAL, label_types, params);
	if (res != TEE_ERROR_BAD_STATE)
		fail("a refusal did not reset the stream", res, 0);
}

/* Where in the SINGLE layout the input of `cmd` starts (in floats), and its size in bytes. */
static uint64_t valid_bytes(uint32_t cmd, size_t *offset)
{
	*offset = 0;
	if (cmd == MIRRORC_CMD_FINAL) {
		*offset = SINGLE_FLOATS - NUM_CLASSES;
		return MIRRORC_TA_LOGITS_BYTES;
	}
	if (cmd == MIRRORC_CMD_SINGLE)
		return MIRRORC_TA_SINGLE_BYTES;
	if (cmd - MIRRORC_CMD_TAP(0) < MIRRORC_TA_NUM_TAPS) {
		for (uint32_t k = 0; k < cmd - MIRRORC_CMD_TAP(0); k++)
			*offset += tap_bytes[k] / 4;
		return tap_bytes[cmd - MIRRORC_CMD_TAP(0)];
	}
	return 16;
}

/* One fuzzed invoke on session s; with `forced`, command `forced_cmd` with the right types and size,
 * holding the reference input with a few floats changed (so that many calls reach the defences). */
static void fuzz_invoke(void *s, struct cursor *c, const float *single, int forced, uint32_t forced_cmd)
{
	TEE_Param params[4], before[4];
	void *buffers[4] = {NULL, NULL, NULL, NULL};
	void *copies[4] = {NULL, NULL, NULL, NULL};
	uint32_t cmd, types;
	uint8_t how = forced ? 0 : take8(c);

	switch (forced ? 6 : how % 6) { /* mostly the TA's commands, so that deep states are reached */
	case 6:
		cmd = forced_cmd;
		break;
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
	int answers = cmd == MIRRORC_CMD_FINAL || cmd == MIRRORC_CMD_SINGLE;
	types = (how & 0x40) ? take32(c) & 0xFFFF : (answers ? label_types : in_types);
	memset(params, 0, sizeof(params));
	for (int i = 0; i < 4; i++) {
		uint32_t t = TEE_PARAM_TYPE_GET(types, i);
		if (t == TEE_PARAM_TYPE_VALUE_INPUT || t == TEE_PARAM_TYPE_VALUE_OUTPUT ||
		    t == TEE_PARAM_TYPE_VALUE_INOUT) {
			params[i].value.a = take32(c);
			params[i].value.b = take32(c);
		} else if (t >= TEE_PARAM_TYPE_MEMREF_INPUT && t <= TEE_PARAM_TYPE_MEMREF_INOUT) {
			uint8_t size_kind = forced ? 0x41 : take8(c); /* exact size, valid contents */
			size_t offset;
			uint64_t want = valid_bytes(cmd, &offset);
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
				const uint8_t *valid = (const uint8_t *)(single + offset);
				if (size_kind & 0x40) { /* the valid input, a few floats changed */
					for (uint64_t j = 0; j < size; j++)
						b[j] = valid[j % (MIRRORC_TA_SINGLE_BYTES - 4 * offset)];
					for (int n = take8(c) % 4; n > 0 && size >= 4; n--) {
						uint8_t kind = take8(c); /* any bits, a NaN or an infinity */
						uint32_t bits = take32(c);
						bits = kind % 3 == 0 ? bits
						       : kind % 3 == 1 ? 0x7fc00000u | (bits & 0x803fffffu)
								       : 0x7f800000u | (bits & 0x80000000u);
						/* anywhere from the start, or among the last floats (the logits) */
						uint64_t floats = size / 4, tail = floats < NUM_CLASSES ? floats : NUM_CLASSES;
						uint64_t at = (kind & 0x80) ? floats - 1 - take8(c) % tail : take8(c) % floats;
						memcpy(b + 4 * at, &bits, 4);
					}
				} else {
					for (uint64_t j = 0; j < size; j++)
						b[j] = c->n ? take8(c) : valid[j % (MIRRORC_TA_SINGLE_BYTES - 4 * offset)];
				}
				params[i].memref.buffer = buffers[i];
				copies[i] = malloc(size ? size : 1);
				memcpy(copies[i], buffers[i], size);
			}
		}
	}
	memcpy(before, params, sizeof(params));
	TEE_Result res = invoke(s, cmd, types, params);
	int reached_defences = answers && res != TEE_ERROR_BAD_PARAMETERS && res != TEE_ERROR_BAD_STATE;
	if (reached_defences) {
		/* the parameters were valid (else BAD_PARAMETERS): the logits end the memref */
		if (!buffers[0] || types != label_types)
			fail("an answer or a defence's refusal to invalid parameters", res, cmd);
		const float *logits = (const float *)buffers[0] + (size_t)(before[0].memref.size / 4) - NUM_CLASSES;
		TEE_Result want = model_answer(logits);
		if (res != want)
			fail("the defences answered otherwise than the model (got, want)", res, want);
	} else if (res != TEE_SUCCESS && res != TEE_ERROR_BAD_PARAMETERS && res != TEE_ERROR_BAD_STATE &&
		   res != TEE_ERROR_NOT_SUPPORTED) {
		fail("unexpected refusal", res, cmd);
	}
	/* nothing leaves but the label: every other parameter and buffer as it was */
	for (int i = 0; i < 4; i++) {
		if (answers && res == TEE_SUCCESS && i == 1)
			check_label(&params[1]);
		else if (memcmp(&params[i], &before[i], sizeof(params[i])) != 0)
			fail("a parameter changed beside the label", (uint32_t)i, res);
		if (buffers[i] && memcmp(buffers[i], copies[i], before[i].memref.size) != 0)
			fail("a memref's contents changed", (uint32_t)i, res);
	}
	if (res != TEE_SUCCESS)
		check_reset(s, single);
	for (int i = 0; i < 4; i++) {
		free(buffers[i]);
		free(copies[i]);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	msim_heap_limit = TA_DATA_SIZE;
	msim_clock_fixed = 1;
	msim_fixed_time_ms = 1000000;
#if MIRRORC_TA_QUERY_BUDGET
	const char *storage = getenv("MIRRORC_TA_STORAGE");
	if (!storage || !*storage) {
		/* in memory where possible: every answer commits the counter (an fdatasync) */
		static const char *const places[] = {"/dev/shm", "/tmp"};
		for (size_t i = 0; i < sizeof(places) / sizeof(places[0]); i++) {
			snprintf(storage_made, sizeof(storage_made), "%s/mirrorc-fuzz-XXXXXX", places[i]);
			if (mkdtemp(storage_made))
				break;
			storage_made[0] = '\0';
		}
		if (!storage_made[0])
			fail("cannot make a storage directory", 0, 0);
		setenv("MIRRORC_TA_STORAGE", storage_made, 1);
		atexit(remove_storage);
	}
#endif
	/* the allowed client (or, with no rule, a user), the same login with another UUID, another
	 * login with the allowed UUID, public */
	TEE_Identity allowed_id = {TEE_LOGIN_USER, {0x12345678, 0x9abc, 0x5def, {1, 2, 3, 4, 5, 6, 7, 8}}};
#if MIRRORC_TA_ALLOW_CLIENT
	const TEE_UUID allowed_uuid = MIRRORC_TA_ALLOW_UUID;
	allowed_id.login = MIRRORC_TA_ALLOW_LOGIN;
	if (!MIRRORC_TA_ALLOW_ANY_UUID)
		allowed_id.uuid = allowed_uuid;
#endif
	identities[0] = allowed_id;
	identities[1] = allowed_id;
	identities[1].uuid.clockSeqAndNode[7] ^= 0x5a;
	identities[2] = allowed_id;
	identities[2].login = allowed_id.login == TEE_LOGIN_GROUP ? TEE_LOGIN_USER : TEE_LOGIN_GROUP;
	memset(&identities[3], 0, sizeof(identities[3])); /* TEE_LOGIN_PUBLIC, nil UUID */
	msim_client_identity = identities[0];
	if (TA_CreateEntryPoint() != TEE_SUCCESS)
		fail("TA_CreateEntryPoint failed", 0, 0);
	return 0;
}

/* The reference input: the first bytes as floats (any value), then a fixed pattern; its logits
 * are moved into the TA's range, so that a valid call is answered. */
static void reference_input(float *single, const uint8_t *data, size_t size)
{
	for (size_t i = 0; i < SINGLE_FLOATS; i++) {
		uint32_t bits = i < size / 4 ? (uint32_t)data[4 * i] | (uint32_t)data[4 * i + 1] << 8 |
						       (uint32_t)data[4 * i + 2] << 16 | (uint32_t)data[4 * i + 3] << 24
					     : 0x3f000000u + 0x1000u * (uint32_t)i;
		memcpy(&single[i], &bits, 4);
	}
#if MIRRORC_TA_RANGE_CHECK
	static const float lo[NUM_CLASSES] = MIRRORC_TA_LOGIT_MIN, hi[NUM_CLASSES] = MIRRORC_TA_LOGIT_MAX;
	float *logits = single + SINGLE_FLOATS - NUM_CLASSES;
	for (int k = 0; k < NUM_CLASSES; k++) {
		uint32_t bits;
		memcpy(&bits, &logits[k], 4);
		logits[k] = lo[k] + (hi[k] - lo[k]) * (float)(bits % 1024) / 1024.0f;
		if (!(logits[k] >= lo[k] && logits[k] <= hi[k]))
			logits[k] = lo[k];
	}
#endif
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static float single[SINGLE_FLOATS];
	void *sessions[FUZZ_SESSIONS] = {NULL};
	int session_ident[FUZZ_SESSIONS] = {0};
	int held[FUZZ_IDENTITIES] = {0}, open_total = 0;
	uint32_t labels[FUZZ_SESSIONS];
	struct cursor c = {data, size};
	TEE_Param none[4];

	reference_input(single, data, size);
	memset(none, 0, sizeof(none));
	refill_rate();
#if MIRRORC_TA_QUERY_BUDGET
	{ /* a few answers below the budget, or a counter that is no count */
		uint8_t b = take8(&c);
		uint64_t left = b % 8;
		set_counter(MIRRORC_TA_QUERY_BUDGET > left ? MIRRORC_TA_QUERY_BUDGET - left : 0, (b & 0xE0) == 0xE0);
	}
#endif
	for (int steps = 0; c.n && steps < 256; steps++) {
		uint8_t op = take8(&c);
		int k = (op >> 4) % FUZZ_SESSIONS;
		if ((op & 0xF) == 0) { /* close, or open as any identity with any parameter types */
			if (sessions[k]) {
				TA_CloseSessionEntryPoint(sessions[k]);
				sessions[k] = NULL;
				held[session_ident[k]]--;
				open_total--;
			} else {
				uint8_t who = take8(&c);
				int ident = who % FUZZ_IDENTITIES;
				uint32_t types = (who & 0x80) ? take32(&c) & 0xFFFF : 0;
				TEE_Result want = types ? TEE_ERROR_BAD_PARAMETERS
						  : !allowed(ident) ? MIRRORC_TA_ERROR_CLIENT
#if MIRRORC_TA_SESSION_CAP
						  : held[ident] >= MIRRORC_TA_SESSION_CAP ? MIRRORC_TA_ERROR_SESSION_CAP
#endif
											  : TEE_SUCCESS;
				msim_client_identity = identities[ident];
				void *opened = NULL;
				TEE_Result res = TA_OpenSessionEntryPoint(types, none, &opened);
				if (res != want && !(want == TEE_SUCCESS && res == TEE_ERROR_OUT_OF_MEMORY &&
						     open_total >= MIRRORC_FUZZ_MAX_SESSIONS))
					fail("a session open got otherwise than the model (got, want)", res, want);
				if (res != TEE_SUCCESS && opened)
					fail("a refused open gave a session", res, 0);
				if (res == TEE_SUCCESS) {
					sessions[k] = opened;
					session_ident[k] = ident;
					held[ident]++;
					open_total++;
#if MIRRORC_TA_SESSION_CAP
					if (held[ident] > MIRRORC_TA_SESSION_CAP)
						fail("a client holds more sessions than the cap", (uint32_t)held[ident], 0);
#endif
				}
			}
		} else if ((op & 0xF) == 1) { /* the clock moves on, or back */
			uint32_t ms = take8(&c) * 16u;
			if ((op & 0x80) && msim_fixed_time_ms > ms)
				msim_fixed_time_ms -= ms;
			else
				msim_fixed_time_ms += ms;
		} else if (sessions[k] && (op & 0xF) == 2) { /* an answerable SINGLE */
			fuzz_invoke(sessions[k], &c, single, 1, MIRRORC_CMD_SINGLE);
		} else if (sessions[k] && (op & 0xF) == 3) { /* an answerable stream: every tap, then FINAL */
			for (uint32_t t = 0; t < MIRRORC_TA_NUM_TAPS; t++)
				fuzz_invoke(sessions[k], &c, single, 1, MIRRORC_CMD_TAP(t));
			fuzz_invoke(sessions[k], &c, single, 1, MIRRORC_CMD_FINAL);
		} else if (sessions[k]) {
			fuzz_invoke(sessions[k], &c, single, 0, 0);
		}
	}

#if MIRRORC_TA_QUERY_BUDGET
	check_counter();
	set_counter(0, 0); /* room for the valid calls below */
#endif
	/* after any garbage, a valid sequence on each open session gives what a fresh session gives */
	for (int k = 0; k < FUZZ_SESSIONS; k++) {
		if (!sessions[k])
			continue;
		TEE_Param params[4];
		memset(params, 0, sizeof(params));
		if (invoke(sessions[k], 0xFFFFFFFFu, 0, params) != TEE_ERROR_NOT_SUPPORTED)
			fail("an unknown command was not NOT_SUPPORTED", 0, 0);
		labels[k] = valid_stream(sessions[k], single);
		TA_CloseSessionEntryPoint(sessions[k]);
	}
	void *fresh = NULL;
	msim_client_identity = identities[0];
	if (TA_OpenSessionEntryPoint(0, none, &fresh) != TEE_SUCCESS)
		fail("a fresh session could not be opened with every session closed", 0, 0);
	uint32_t want = valid_stream(fresh, single);
	if (valid_single(fresh, single) != want)
		fail("SINGLE and the stream disagree", want, 0);
	for (int k = 0; k < FUZZ_SESSIONS; k++)
		if (sessions[k] && labels[k] != want)
			fail("label after garbage differs from a fresh session's", labels[k], want);
	TA_CloseSessionEntryPoint(fresh);
#if MIRRORC_TA_QUERY_BUDGET
	check_counter();
#endif
	if (msim_heap_used != 0)
		fail("TA heap not freed after every session closed", (uint32_t)msim_heap_used, 0);
	return 0;
}
