/*
 * The TA simulator: a process that holds one Trusted Application (its sources compiled for the
 * host against tee_internal_api.h) and serves the Client API shim through a shared mailbox,
 * standing in for OP-TEE's core. It loads nothing at run time: the model's weights are compiled
 * into the TA.
 *
 *   ta_sim --serve   serve the mailbox on fd 4, memfds and hang-ups on socket fd 3
 *                    (teec_sim.c spawns it this way; see sim_protocol.h)
 *   ta_sim --info    print the TA's properties as JSON
 *
 * Like OP-TEE it creates the TA instance before the first session, checks the UUID at open,
 * keeps memrefs inside the shared memory they name, gives the TA the client identity the REE
 * kernel would (sim_client_identity.h: login type and UUID from the caller's credentials), runs the TA on a stack of TA_STACK_SIZE
 * (plus a margin for this loop) and limits TEE_Malloc to TA_DATA_SIZE. A TA that crashes or
 * panics ends the process, which the client sees as TEEC_ERROR_TARGET_DEAD.
 */
#ifndef _GNU_SOURCE /* the build also passes -D_GNU_SOURCE */
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sim_client_identity.h"
#include "sim_doorbell.h"
#include "sim_protocol.h"
#include "tee_internal_api.h"
#include "user_ta_header.h"
#include "user_ta_header_defines.h"

extern size_t msim_heap_limit;
extern size_t msim_heap_peak;
extern TEE_Identity msim_client_identity; /* what TEE_PROPSET_CURRENT_CLIENT answers */

/* Stack for this loop and libc around the TA's own TA_STACK_SIZE. */
#define MSIM_LOOP_STACK (16 * 1024)

static const TEE_UUID ta_uuid = TA_UUID;

struct shm_map {
	void *base;
	size_t size;
};
static struct shm_map shms[MSIM_MAX_SHM];

struct session {
	int open;
	void *ctx;
	TEE_Identity client; /* derived at open, the TA's current client in every later call */
};
static struct session sessions[MSIM_MAX_SESSIONS];

static int sock = -1;
static struct msim_mailbox *mb;

/* The next memfd the client sent ahead of its MSIM_SHM_REGISTER request, or -1. */
static int recv_fd(void)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	ssize_t n;
	int fd = -1;
	do /* queued before the request was posted: never waits */
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		return -1;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/* Whether the client is still there: it has not finalized the context, and its end of the
 * socket is open (it closes when the client exits or dies). */
static int client_alive(void *unused)
{
	(void)unused;
	return !msim_load(&mb->closing) && msim_peer_open(sock);
}

static int uuid_equal(const struct msim_request *req)
{
	return req->uuid_time_low == ta_uuid.timeLow && req->uuid_time_mid == ta_uuid.timeMid &&
	       req->uuid_time_hi_and_version == ta_uuid.timeHiAndVersion &&
	       memcmp(req->uuid_clock_seq_and_node, ta_uuid.clockSeqAndNode, 8) == 0;
}

/* Turn wire parameters into TEE_Params pointing into the shared mappings. */
static TEE_Result map_params(const struct msim_request *req, TEE_Param params[4])
{
	memset(params, 0, 4 * sizeof(TEE_Param));
	for (int i = 0; i < 4; i++) {
		const struct msim_param *p = &req->params[i];
		switch (TEE_PARAM_TYPE_GET(req->param_types, i)) {
		case TEE_PARAM_TYPE_NONE:
			break;
		case TEE_PARAM_TYPE_VALUE_INPUT:
		case TEE_PARAM_TYPE_VALUE_OUTPUT:
		case TEE_PARAM_TYPE_VALUE_INOUT:
			params[i].value.a = p->a;
			params[i].value.b = p->b;
			break;
		case TEE_PARAM_TYPE_MEMREF_INPUT:
		case TEE_PARAM_TYPE_MEMREF_OUTPUT:
		case TEE_PARAM_TYPE_MEMREF_INOUT:
			if (p->shm_id == 0) { /* a NULL memref, as the client passed it */
				params[i].memref.buffer = NULL;
				params[i].memref.size = (size_t)p->size;
				break;
			}
			if (p->shm_id >= MSIM_MAX_SHM || !shms[p->shm_id].base ||
			    p->offset > shms[p->shm_id].size ||
			    p->size > shms[p->shm_id].size - p->offset)
				return TEE_ERROR_BAD_PARAMETERS;
			params[i].memref.buffer = (char *)shms[p->shm_id].base + p->offset;
			params[i].memref.size = (size_t)p->size;
			break;
		default:
			return TEE_ERROR_BAD_PARAMETERS;
		}
	}
	return TEE_SUCCESS;
}

static void unmap_params(uint32_t types, const TEE_Param params[4], struct msim_response *rsp)
{
	for (int i = 0; i < 4; i++) {
		uint32_t t = TEE_PARAM_TYPE_GET(types, i);
		if (t == TEE_PARAM_TYPE_VALUE_OUTPUT || t == TEE_PARAM_TYPE_VALUE_INOUT) {
			rsp->params[i].a = params[i].value.a;
			rsp->params[i].b = params[i].value.b;
		} else if (t == TEE_PARAM_TYPE_MEMREF_OUTPUT || t == TEE_PARAM_TYPE_MEMREF_INOUT) {
			rsp->params[i].size = params[i].memref.size;
		}
	}
}

static void open_session(const struct msim_request *req, struct msim_response *rsp,
			 TEE_Result created)
{
	TEE_Param params[4];
	TEE_Identity client;
	int id, open_count = 0, err;

	/* the REE kernel derives the identity before anything reaches the TEE; libteec maps its
	 * errno (EINVAL: an unsupported login, EPERM: not in the group) to these codes */
	err = msim_client_identity_of(sock, req->login, req->login_gid, &client);
	if (err) {
		rsp->origin = TEE_ORIGIN_COMMS;
		rsp->result = err == EINVAL ? TEE_ERROR_BAD_PARAMETERS : TEE_ERROR_GENERIC;
		return;
	}
	rsp->origin = TEE_ORIGIN_TEE;
	if (created != TEE_SUCCESS) {
		rsp->result = created;
		return;
	}
	if (!uuid_equal(req)) {
		rsp->result = TEE_ERROR_ITEM_NOT_FOUND;
		return;
	}
	for (id = 1; id < MSIM_MAX_SESSIONS; id++)
		open_count += sessions[id].open;
	if (open_count && !(TA_FLAGS & TA_FLAG_MULTI_SESSION)) {
		rsp->result = TEE_ERROR_BUSY;
		return;
	}
	for (id = 1; id < MSIM_MAX_SESSIONS && sessions[id].open; id++)
		;
	if (id == MSIM_MAX_SESSIONS) {
		rsp->result = TEE_ERROR_OUT_OF_MEMORY;
		return;
	}
	rsp->result = map_params(req, params);
	if (rsp->result != TEE_SUCCESS)
		return;
	rsp->origin = TEE_ORIGIN_TRUSTED_APP;
	sessions[id].ctx = NULL;
	sessions[id].client = client;
	msim_client_identity = client;
	rsp->result = TA_OpenSessionEntryPoint(req->param_types, params, &sessions[id].ctx);
	if (rsp->result == TEE_SUCCESS) {
		sessions[id].open = 1;
		rsp->session = (uint32_t)id;
		unmap_params(req->param_types, params, rsp);
	}
}

static struct session *find_session(uint32_t id)
{
	if (id == 0 || id >= MSIM_MAX_SESSIONS || !sessions[id].open)
		return NULL;
	return &sessions[id];
}

static void invoke(const struct msim_request *req, struct msim_response *rsp)
{
	TEE_Param params[4];
	struct session *s = find_session(req->session);

	rsp->origin = TEE_ORIGIN_TEE;
	if (!s) {
		rsp->result = TEE_ERROR_BAD_STATE;
		return;
	}
	rsp->result = map_params(req, params);
	if (rsp->result != TEE_SUCCESS)
		return;
	rsp->origin = TEE_ORIGIN_TRUSTED_APP;
	msim_client_identity = s->client;
	rsp->result = TA_InvokeCommandEntryPoint(s->ctx, req->command, req->param_types, params);
	unmap_params(req->param_types, params, rsp);
}

/* Whether memfd `fd` holds at least `size` bytes and can never hold fewer: touching a mapping
 * past the end of its file is SIGBUS, so a client must not be able to declare more than it has,
 * nor shrink the file once the simulator relies on it. The shrink seal is added here (the client
 * creates its memfds sealable); a file that cannot be sealed is refused. */
static int memfd_covers(int fd, uint64_t size)
{
	struct stat st;
	int seals;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0 &&
	    ((seals = fcntl(fd, F_GET_SEALS)) < 0 || !(seals & F_SEAL_SHRINK)))
		return 0;
	return fstat(fd, &st) == 0 && st.st_size >= 0 && (uint64_t)st.st_size >= size;
}

static void shm_register(const struct msim_request *req, struct msim_response *rsp, int fd)
{
	rsp->origin = TEE_ORIGIN_COMMS;
	rsp->result = TEE_ERROR_BAD_PARAMETERS;
	if (fd < 0 || req->shm_id == 0 || req->shm_id >= MSIM_MAX_SHM || shms[req->shm_id].base ||
	    req->shm_size == 0 || !memfd_covers(fd, req->shm_size))
		goto out;
	void *base = mmap(NULL, (size_t)req->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		rsp->result = TEE_ERROR_OUT_OF_MEMORY;
		goto out;
	}
	shms[req->shm_id].base = base;
	shms[req->shm_id].size = (size_t)req->shm_size;
	rsp->result = TEE_SUCCESS;
out:
	if (fd >= 0)
		close(fd); /* the mapping keeps the memory */
}

static void shm_unregister(const struct msim_request *req, struct msim_response *rsp)
{
	rsp->origin = TEE_ORIGIN_COMMS;
	if (req->shm_id == 0 || req->shm_id >= MSIM_MAX_SHM || !shms[req->shm_id].base) {
		rsp->result = TEE_ERROR_BAD_PARAMETERS;
		return;
	}
	munmap(shms[req->shm_id].base, shms[req->shm_id].size);
	shms[req->shm_id].base = NULL;
	shms[req->shm_id].size = 0;
	rsp->result = TEE_SUCCESS;
}

static void *serve(void *unused)
{
	(void)unused;
	TEE_Result created = TA_CreateEntryPoint();

	uint64_t spin_ns = msim_spin_ns(getenv("MIRRORC_SIM_SPIN_US"));
	uint32_t seq = 0;

	for (;;) {
		struct msim_request req;
		struct msim_response rsp;
		int fd = -1;
		if (msim_wait(&mb->req_seq, seq, &mb->server_sleeping, spin_ns, client_alive, NULL) != 0 ||
		    msim_load(&mb->closing))
			break; /* the client finalized the context or died */
		seq = msim_load(&mb->req_seq);
		memcpy(&req, &mb->req, sizeof(req)); /* the client could rewrite the page meanwhile */
		memset(&rsp, 0, sizeof(rsp));
		rsp.magic = MSIM_MAGIC;
		if (req.magic != MSIM_MAGIC) {
			rsp.result = TEE_ERROR_COMMUNICATION;
			rsp.origin = TEE_ORIGIN_COMMS;
		} else {
			if (req.op == MSIM_SHM_REGISTER)
				fd = recv_fd();
			switch (req.op) {
			case MSIM_OPEN_SESSION:
				open_session(&req, &rsp, created);
				break;
			case MSIM_INVOKE:
				invoke(&req, &rsp);
				break;
			case MSIM_CLOSE_SESSION: {
				struct session *s = find_session(req.session);
				if (s) {
					msim_client_identity = s->client;
					TA_CloseSessionEntryPoint(s->ctx);
					s->open = 0;
				}
				rsp.result = s ? TEE_SUCCESS : TEE_ERROR_BAD_STATE;
				rsp.origin = TEE_ORIGIN_TEE;
				break;
			}
			case MSIM_SHM_REGISTER:
				shm_register(&req, &rsp, fd);
				break;
			case MSIM_SHM_UNREGISTER:
				shm_unregister(&req, &rsp);
				break;
			default:
				rsp.result = TEE_ERROR_NOT_SUPPORTED;
				rsp.origin = TEE_ORIGIN_COMMS;
			}
		}
		memcpy(&mb->rsp, &rsp, sizeof(rsp));
		msim_post(&mb->rsp_seq, seq, &mb->client_sleeping);
	}
	for (int id = 1; id < MSIM_MAX_SESSIONS; id++)
		if (sessions[id].open) {
			msim_client_identity = sessions[id].client;
			TA_CloseSessionEntryPoint(sessions[id].ctx);
		}
	if (created == TEE_SUCCESS)
		TA_DestroyEntryPoint();
	return NULL;
}

static void print_info(void)
{
	printf("{\"uuid\": \"%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x\", ", ta_uuid.timeLow,
	       ta_uuid.timeMid, ta_uuid.timeHiAndVersion, ta_uuid.clockSeqAndNode[0],
	       ta_uuid.clockSeqAndNode[1], ta_uuid.clockSeqAndNode[2], ta_uuid.clockSeqAndNode[3],
	       ta_uuid.clockSeqAndNode[4], ta_uuid.clockSeqAndNode[5], ta_uuid.clockSeqAndNode[6],
	       ta_uuid.clockSeqAndNode[7]);
	printf("\"flags\": %u, \"stack_size\": %u, \"data_size\": %u}\n", (unsigned)(TA_FLAGS),
	       (unsigned)(TA_STACK_SIZE), (unsigned)(TA_DATA_SIZE));
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--info") == 0) {
		print_info();
		return 0;
	}
	if (argc != 2 || strcmp(argv[1], "--serve") != 0) {
		fprintf(stderr, "usage: %s --serve | --info\n", argv[0]);
		return 2;
	}
	sock = MSIM_SOCKET_FD;
	if (!memfd_covers(MSIM_MAILBOX_FD, MSIM_MAILBOX_BYTES)) {
		fprintf(stderr, "mirrorc TA simulator: the mailbox on fd %d is not a sealable memfd of "
				"%zu bytes\n", MSIM_MAILBOX_FD, (size_t)MSIM_MAILBOX_BYTES);
		return 2;
	}
	mb = mmap(NULL, MSIM_MAILBOX_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, MSIM_MAILBOX_FD, 0);
	if (mb == MAP_FAILED) {
		fprintf(stderr, "mirrorc TA simulator: no mailbox on fd %d\n", MSIM_MAILBOX_FD);
		return 2;
	}
	msim_heap_limit = TA_DATA_SIZE;

	/* The TA runs on a stack of its declared size (plus this loop's margin): an undersized
	 * TA_STACK_SIZE faults here as it would on a board. */
	pthread_attr_t attr;
	pthread_t thread;
	size_t stack = (size_t)(TA_STACK_SIZE) + MSIM_LOOP_STACK;
	if (stack < (size_t)PTHREAD_STACK_MIN)
		stack = PTHREAD_STACK_MIN;
	pthread_attr_init(&attr);
	if (pthread_attr_setstacksize(&attr, stack) != 0 ||
	    pthread_create(&thread, &attr, serve, NULL) != 0) {
		fprintf(stderr, "mirrorc TA simulator: cannot start the TA thread\n");
		return 1;
	}
	pthread_join(thread, NULL);
	return 0;
}
