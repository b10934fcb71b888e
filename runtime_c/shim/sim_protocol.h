/*
 * The protocol between the Client API shim (teec_sim.c, in the normal-world process) and the TA
 * simulator (ta_sim_main.c, its own process). One fixed-size request, one fixed-size response,
 * passed through a mailbox: a shared page (a memfd the client creates, the simulator's fd 4)
 * with a sequence number each way (sim_doorbell.h waits on them). Buffers never travel in
 * messages: they live in memfd shared memory that both processes map, and a request names them
 * by id and offset. A memfd reaches the simulator once, over the SOCK_SEQPACKET socketpair (the
 * simulator's fd 3): one byte with the fd attached (SCM_RIGHTS), sent just before its
 * MSIM_SHM_REGISTER request. The socket also tells each side that the other has gone (hang-up).
 *
 * Why a mailbox and not a message on the socket: a socket round trip wakes the other process
 * through the scheduler (tens of microseconds on a loaded host, more than LeNet-5's whole CPM);
 * the mailbox is polled for a short while first, as a core switching worlds would just run on.
 */
#ifndef MIRRORC_SIM_PROTOCOL_H
#define MIRRORC_SIM_PROTOCOL_H

#include <stddef.h>
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
	uint32_t login_gid; /* TEEC_LOGIN_GROUP: the group named in the connection data */
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

/* The shared page. Each sequence number sits on its own cache line: one writer each. */
struct msim_mailbox {
	uint32_t req_seq;         /* client: bumped after writing req */
	uint32_t server_sleeping; /* simulator: asleep on req_seq (the client must wake it) */
	uint32_t closing;         /* client: the context is finalized, exit */
	uint32_t pad0[13];
	uint32_t rsp_seq;         /* simulator: set to req_seq after writing rsp */
	uint32_t client_sleeping; /* client: asleep on rsp_seq */
	uint32_t pad1[14];
	struct msim_request req;
	struct msim_response rsp;
};

/* The mailbox memfd's size: whole pages. */
#define MSIM_MAILBOX_BYTES ((sizeof(struct msim_mailbox) + 4095) & ~(size_t)4095)

#define MSIM_SOCKET_FD 3
#define MSIM_MAILBOX_FD 4

#endif /* MIRRORC_SIM_PROTOCOL_H */
