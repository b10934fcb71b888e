/*
 * The wire protocol between the Client API shim (teec_sim.c, in the normal-world process) and the
 * TA simulator (ta_sim_main.c, its own process). One fixed-size request, one fixed-size response,
 * over a SOCK_SEQPACKET socketpair; buffers never travel in messages: they live in memfd shared
 * memory that both processes map, and a request names them by id and offset. A memfd reaches the
 * simulator once, attached (SCM_RIGHTS) to its MSIM_SHM_REGISTER request.
 */
#ifndef MIRRORC_SIM_PROTOCOL_H
#define MIRRORC_SIM_PROTOCOL_H

#include <stdint.h>

#define MSIM_MAGIC 0x4d53494du /* "MSIM" */
#define MSIM_MAX_SHM 256
#define MSIM_MAX_SESSIONS 64

enum msim_op {
	MSIM_OPEN_SESSION = 1,
	MSIM_INVOKE = 2,
	MSIM_CLOSE_SESSION = 3,
	MSIM_SHM_REGISTER = 4,   /* fd attached; shm_id and shm_size in the request */
	MSIM_SHM_UNREGISTER = 5,
};

/* One parameter: a value, or a memref = (shared memory id, offset, size); shm_id 0 = NULL. */
struct msim_param {
	uint32_t shm_id;
	uint32_t a, b;
	uint32_t reserved;
	uint64_t offset;
	uint64_t size;
};

struct msim_request {
	uint32_t magic;
	uint32_t op;
	uint32_t session;
	uint32_t command;
	uint32_t param_types; /* TA-side types (TEE_PARAM_TYPE_*) */
	uint32_t login;
	uint32_t uuid_time_low;
	uint16_t uuid_time_mid;
	uint16_t uuid_time_hi_and_version;
	uint8_t uuid_clock_seq_and_node[8];
	uint32_t shm_id;
	uint32_t reserved;
	uint64_t shm_size;
	struct msim_param params[4];
};

struct msim_response {
	uint32_t magic;
	uint32_t result;
	uint32_t origin;
	uint32_t session;
	struct msim_param params[4]; /* output values and memref sizes as the TA left them */
};

#endif /* MIRRORC_SIM_PROTOCOL_H */
