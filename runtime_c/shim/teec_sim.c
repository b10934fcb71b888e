/*
 * A libteec-compatible GlobalPlatform TEE Client API that talks to the mirrorc TA simulator
 * (ta_sim_main.c) instead of an OP-TEE driver. Built as a shared library, it replaces libteec.so
 * for host programs and for mirrorc.teec, with the same header (tee_client_api.h).
 *
 * TEEC_InitializeContext spawns the simulator: the executable named by the context name, or by
 * $MIRRORC_TA_SIM when the name is NULL (the default TEE). Each context owns one simulator
 * process, one mailbox page shared with it for the requests and one socket to it for memfds and
 * hang-ups (TEEC_Context.imp.fd); see sim_protocol.h.
 *
 * Memory crosses as in OP-TEE: temporary memrefs are copied into a per-context shared bounce
 * buffer, allocated shared memory is a memfd mapped by both processes, registered memory gets a
 * shared shadow copied in before and out after each call. The simulator only ever sees offsets
 * into memory it mapped itself.
 */
#ifndef _GNU_SOURCE /* the build also passes -D_GNU_SOURCE */
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sim_doorbell.h"
#include "sim_protocol.h"
#include "tee_client_api.h"

extern char **environ;

#define ALIGN8(x) (((x) + 7u) & ~(size_t)7u)
/* The largest bounce buffer for temporary memrefs: far beyond any TA's parameters (OP-TEE's own
 * limit on non-contiguous shared memory is smaller), and small enough that the doubling growth in
 * ensure_bounce and every size sum below stay far from SIZE_MAX. */
#define MAX_BOUNCE_BYTES ((size_t)1 << 30)

/* TA-side parameter types (TEE_PARAM_TYPE_*), the values OP-TEE hands the TA. */
enum { TA_NONE = 0, TA_VALUE_IN = 1, TA_VALUE_OUT = 2, TA_VALUE_INOUT = 3,
       TA_MEMREF_IN = 5, TA_MEMREF_OUT = 6, TA_MEMREF_INOUT = 7 };

struct context_rec {
	int fd;
	pid_t pid;
	struct msim_mailbox *mb;
	uint32_t seq;     /* of the last request */
	uint64_t spin_ns; /* polling for a response before sleeping */
	pthread_mutex_t lock; /* one request/response at a time per mailbox */
	uint32_t bounce_id;
	void *bounce;
	size_t bounce_size;
	int dead; /* the simulator has gone: every later call is TEEC_ERROR_TARGET_DEAD */
	struct context_rec *next;
};

struct shm_rec {
	int used;
	int ctx_fd;
	void *base;
	size_t size;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct context_rec *contexts;
static struct shm_rec shm_table[MSIM_MAX_SHM];

static struct context_rec *find_context(int fd)
{
	pthread_mutex_lock(&registry_lock);
	struct context_rec *c = contexts;
	while (c && c->fd != fd)
		c = c->next;
	pthread_mutex_unlock(&registry_lock);
	return c;
}

/* Whether the simulator still exists. */
static int simulator_alive(void *arg)
{
	return msim_peer_open(((struct context_rec *)arg)->fd);
}

/* Hand `fd` to the simulator: one byte with the fd attached. */
static int send_fd(struct context_rec *c, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	ssize_t n;

	memset(&control, 0, sizeof(control));
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	do
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == 1 ? 0 : -1;
}

/* One round trip through the mailbox; `fd` (or -1) goes ahead on the socket. Caller holds c->lock. */
static TEEC_Result roundtrip(struct context_rec *c, struct msim_request *req, int fd,
			     struct msim_response *rsp)
{
	req->magic = MSIM_MAGIC;
	if (c->dead)
		return TEEC_ERROR_TARGET_DEAD;
	if (fd >= 0 && send_fd(c, fd) != 0) {
		c->dead = 1;
		return TEEC_ERROR_TARGET_DEAD;
	}
	memcpy(&c->mb->req, req, sizeof(*req));
	c->seq++;
	msim_post(&c->mb->req_seq, c->seq, &c->mb->server_sleeping);
	if (msim_wait(&c->mb->rsp_seq, c->seq - 1, &c->mb->client_sleeping, c->spin_ns,
		      simulator_alive, c) != 0) {
		c->dead = 1; /* the simulator (the TA) died */
		return TEEC_ERROR_TARGET_DEAD;
	}
	memcpy(rsp, &c->mb->rsp, sizeof(*rsp));
	if (rsp->magic != MSIM_MAGIC) {
		c->dead = 1;
		return TEEC_ERROR_TARGET_DEAD;
	}
	return TEEC_SUCCESS;
}

/* Create a memfd of `size` bytes, map it here and in the simulator; returns the shm id or 0. */
static uint32_t shm_create(struct context_rec *c, size_t size, void **base)
{
	uint32_t id;
	int memfd;
	struct msim_request req;
	struct msim_response rsp;

	if (size == 0)
		size = 8; /* GP allows empty shared memory; mmap does not */
	pthread_mutex_lock(&registry_lock);
	for (id = 1; id < MSIM_MAX_SHM && shm_table[id].used; id++)
		;
	if (id < MSIM_MAX_SHM)
		shm_table[id].used = 1;
	pthread_mutex_unlock(&registry_lock);
	if (id == MSIM_MAX_SHM)
		return 0;

	/* sealable: the simulator seals it against shrinking before it maps it */
	memfd = memfd_create("mirrorc-teec-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (memfd < 0 || ftruncate(memfd, (off_t)size) != 0)
		goto fail;
	*base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (*base == MAP_FAILED)
		goto fail;
	memset(&req, 0, sizeof(req));
	req.op = MSIM_SHM_REGISTER;
	req.shm_id = id;
	req.shm_size = size;
	if (roundtrip(c, &req, memfd, &rsp) != TEEC_SUCCESS || rsp.result != TEEC_SUCCESS) {
		munmap(*base, size);
		goto fail;
	}
	close(memfd);
	pthread_mutex_lock(&registry_lock);
	shm_table[id].ctx_fd = c->fd;
	shm_table[id].base = *base;
	shm_table[id].size = size;
	pthread_mutex_unlock(&registry_lock);
	return id;
fail:
	if (memfd >= 0)
		close(memfd);
	pthread_mutex_lock(&registry_lock);
	shm_table[id].used = 0;
	pthread_mutex_unlock(&registry_lock);
	return 0;
}

static void shm_destroy(struct context_rec *c, uint32_t id)
{
	struct msim_request req;
	struct msim_response rsp;

	if (id == 0 || id >= MSIM_MAX_SHM || !shm_table[id].used)
		return;
	if (c) {
		memset(&req, 0, sizeof(req));
		req.op = MSIM_SHM_UNREGISTER;
		req.shm_id = id;
		roundtrip(c, &req, -1, &rsp);
	}
	pthread_mutex_lock(&registry_lock);
	munmap(shm_table[id].base, shm_table[id].size);
	memset(&shm_table[id], 0, sizeof(shm_table[id]));
	pthread_mutex_unlock(&registry_lock);
}

/* A close-on-exec copy of `fd` numbered above the simulator's fixed fds (the spawn's dup2s
 * must not overwrite one source with another). */
static int above_fixed_fds(int fd)
{
	int moved;
	if (fd > MSIM_MAILBOX_FD)
		return fd;
	moved = fcntl(fd, F_DUPFD_CLOEXEC, MSIM_MAILBOX_FD + 1);
	close(fd);
	return moved;
}

TEEC_Result TEEC_InitializeContext(const char *name, TEEC_Context *context)
{
	const char *path = name ? name : getenv("MIRRORC_TA_SIM");
	int sv[2], mbfd;
	size_t mb_size = MSIM_MAILBOX_BYTES;
	posix_spawn_file_actions_t actions;
	struct context_rec *c;
	void *mb;

	if (!context)
		return TEEC_ERROR_BAD_PARAMETERS;
	if (!path || access(path, X_OK) != 0)
		return TEEC_ERROR_ITEM_NOT_FOUND; /* no such TEE */
	mbfd = memfd_create("mirrorc-teec-mailbox", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mbfd < 0)
		return TEEC_ERROR_OUT_OF_MEMORY;
	mbfd = above_fixed_fds(mbfd);
	if (mbfd < 0 || ftruncate(mbfd, (off_t)mb_size) != 0 ||
	    (mb = mmap(NULL, mb_size, PROT_READ | PROT_WRITE, MAP_SHARED, mbfd, 0)) == MAP_FAILED) {
		if (mbfd >= 0)
			close(mbfd);
		return TEEC_ERROR_OUT_OF_MEMORY;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		munmap(mb, mb_size);
		close(mbfd);
		return TEEC_ERROR_COMMUNICATION;
	}
	sv[1] = above_fixed_fds(sv[1]);
	c = calloc(1, sizeof(*c));
	if (!c || sv[1] < 0) {
		TEEC_Result res = c ? TEEC_ERROR_COMMUNICATION : TEEC_ERROR_OUT_OF_MEMORY;
		free(c);
		close(sv[0]);
		if (sv[1] >= 0)
			close(sv[1]);
		munmap(mb, mb_size);
		close(mbfd);
		return res;
	}
	/* The simulator gets its socket end as fd 3 and the mailbox as fd 4 (dup2 clears
	 * close-on-exec). */
	char *argv[] = {(char *)path, "--serve", NULL};
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_adddup2(&actions, sv[1], MSIM_SOCKET_FD);
	posix_spawn_file_actions_adddup2(&actions, mbfd, MSIM_MAILBOX_FD);
	int err = posix_spawn(&c->pid, path, &actions, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&actions);
	close(sv[1]);
	close(mbfd); /* the mappings keep the page */
	if (err != 0) {
		close(sv[0]);
		munmap(mb, mb_size);
		free(c);
		return TEEC_ERROR_ITEM_NOT_FOUND;
	}
	c->fd = sv[0];
	c->mb = mb;
	c->spin_ns = msim_spin_ns(getenv("MIRRORC_SIM_SPIN_US"));
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_lock(&registry_lock);
	c->next = contexts;
	contexts = c;
	pthread_mutex_unlock(&registry_lock);

	memset(context, 0, sizeof(*context));
	context->imp.fd = c->fd;
	context->imp.reg_mem = false;
	context->imp.memref_null = true;
	return TEEC_SUCCESS;
}

void TEEC_FinalizeContext(TEEC_Context *context)
{
	struct context_rec *c, **link;

	if (!context)
		return;
	pthread_mutex_lock(&registry_lock);
	for (link = &contexts; *link && (*link)->fd != context->imp.fd; link = &(*link)->next)
		;
	c = *link;
	if (c)
		*link = c->next;
	pthread_mutex_unlock(&registry_lock);
	if (!c)
		return;
	if (c->bounce_id)
		shm_destroy(NULL, c->bounce_id);
	/* the simulator closes its sessions and exits (it would also on the socket's hang-up) */
	msim_store(&c->mb->closing, 1);
	msim_post(&c->mb->req_seq, c->seq + 1, &c->mb->server_sleeping);
	close(c->fd);
	while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
		;
	pthread_mutex_destroy(&c->lock);
	munmap(c->mb, MSIM_MAILBOX_BYTES);
	free(c);
	context->imp.fd = -1;
}

/* Make the bounce buffer hold at least `need` bytes (at most MAX_BOUNCE_BYTES, so the doubling
 * cannot wrap). Caller holds c->lock. */
static TEEC_Result ensure_bounce(struct context_rec *c, size_t need)
{
	if (need <= c->bounce_size)
		return TEEC_SUCCESS;
	if (need > MAX_BOUNCE_BYTES)
		return TEEC_ERROR_OUT_OF_MEMORY;
	size_t size = c->bounce_size ? c->bounce_size : 4096;
	while (size < need)
		size *= 2;
	if (c->bounce_id)
		shm_destroy(c, c->bounce_id);
	c->bounce_id = shm_create(c, size, &c->bounce);
	c->bounce_size = c->bounce_id ? size : 0;
	if (!c->bounce_id)
		return c->dead ? TEEC_ERROR_TARGET_DEAD : TEEC_ERROR_OUT_OF_MEMORY;
	return TEEC_SUCCESS;
}

static uint32_t memref_ta_type(uint32_t flags)
{
	uint32_t t = 0;
	if (flags & TEEC_MEM_INPUT)
		t |= 1;
	if (flags & TEEC_MEM_OUTPUT)
		t |= 2;
	return t ? 4 | t : TA_NONE;
}

/* Translate an operation into a request; copies inputs into shared memory. */
static TEEC_Result build_request(struct context_rec *c, TEEC_Operation *op,
				 struct msim_request *req)
{
	size_t temp_bytes = 0;
	int i;

	req->param_types = 0;
	if (!op)
		return TEEC_SUCCESS;
	/* Sizes come from the caller: each is bounded before it is rounded up or added, so neither
	 * ALIGN8 nor the sum can wrap (a wrapped total would under-size the bounce buffer). */
	for (i = 0; i < 4; i++) {
		uint32_t t = TEEC_PARAM_TYPE_GET(op->paramTypes, i);
		if (t >= TEEC_MEMREF_TEMP_INPUT && t <= TEEC_MEMREF_TEMP_INOUT &&
		    op->params[i].tmpref.buffer) {
			size_t size = op->params[i].tmpref.size;
			if (size > MAX_BOUNCE_BYTES || ALIGN8(size) > MAX_BOUNCE_BYTES - temp_bytes)
				return TEEC_ERROR_OUT_OF_MEMORY;
			temp_bytes += ALIGN8(size);
		}
	}
	if (temp_bytes) {
		TEEC_Result res = ensure_bounce(c, temp_bytes);
		if (res != TEEC_SUCCESS)
			return res;
	}

	size_t cursor = 0;
	for (i = 0; i < 4; i++) {
		uint32_t t = TEEC_PARAM_TYPE_GET(op->paramTypes, i), ta = TA_NONE;
		struct msim_param *p = &req->params[i];
		TEEC_Parameter *param = &op->params[i];
		switch (t) {
		case TEEC_NONE:
			break;
		case TEEC_VALUE_INPUT:
		case TEEC_VALUE_OUTPUT:
		case TEEC_VALUE_INOUT:
			ta = t;
			p->a = param->value.a;
			p->b = param->value.b;
			break;
		case TEEC_MEMREF_TEMP_INPUT:
		case TEEC_MEMREF_TEMP_OUTPUT:
		case TEEC_MEMREF_TEMP_INOUT:
			ta = t;
			p->size = param->tmpref.size;
			if (!param->tmpref.buffer)
				break; /* NULL memref: size only */
			p->shm_id = c->bounce_id;
			p->offset = cursor;
			if (t != TEEC_MEMREF_TEMP_OUTPUT)
				memcpy((char *)c->bounce + cursor, param->tmpref.buffer, param->tmpref.size);
			cursor += ALIGN8(param->tmpref.size);
			break;
		case TEEC_MEMREF_WHOLE:
		case TEEC_MEMREF_PARTIAL_INPUT:
		case TEEC_MEMREF_PARTIAL_OUTPUT:
		case TEEC_MEMREF_PARTIAL_INOUT: {
			TEEC_SharedMemory *shm = param->memref.parent;
			if (!shm || shm->imp.id <= 0 || shm->imp.id >= MSIM_MAX_SHM ||
			    !shm_table[shm->imp.id].used || shm_table[shm->imp.id].ctx_fd != c->fd)
				return TEEC_ERROR_BAD_PARAMETERS;
			/* a size changed after registration must not reach past the shared copy */
			if (shm->size > shm->imp.alloced_size)
				return TEEC_ERROR_BAD_PARAMETERS;
			size_t offset = 0, size = shm->size;
			uint32_t dir = shm->flags & (TEEC_MEM_INPUT | TEEC_MEM_OUTPUT);
			if (t != TEEC_MEMREF_WHOLE) {
				uint32_t want = t & 3; /* 1 input, 2 output, 3 both */
				if ((dir & want) != want)
					return TEEC_ERROR_BAD_PARAMETERS;
				dir = want;
				offset = param->memref.offset;
				size = param->memref.size;
				if (offset > shm->size || size > shm->size - offset)
					return TEEC_ERROR_BAD_PARAMETERS;
			}
			ta = memref_ta_type(dir);
			if (shm->imp.shadow_buffer && (dir & TEEC_MEM_INPUT))
				memcpy((char *)shm->imp.shadow_buffer + offset,
				       (char *)shm->buffer + offset, size);
			p->shm_id = (uint32_t)shm->imp.id;
			p->offset = offset;
			p->size = size;
			break;
		}
		default:
			return TEEC_ERROR_BAD_PARAMETERS;
		}
		req->param_types |= ta << (4 * i);
	}
	return TEEC_SUCCESS;
}

/* Copy outputs back into the operation after the TA returned. */
static void finish_request(struct context_rec *c, TEEC_Operation *op,
			   const struct msim_request *req, const struct msim_response *rsp)
{
	if (!op)
		return;
	for (int i = 0; i < 4; i++) {
		uint32_t t = TEEC_PARAM_TYPE_GET(op->paramTypes, i);
		TEEC_Parameter *param = &op->params[i];
		const struct msim_param *p = &req->params[i];
		size_t new_size = rsp->params[i].size;
		switch (t) {
		case TEEC_VALUE_OUTPUT:
		case TEEC_VALUE_INOUT:
			param->value.a = rsp->params[i].a;
			param->value.b = rsp->params[i].b;
			break;
		case TEEC_MEMREF_TEMP_OUTPUT:
		case TEEC_MEMREF_TEMP_INOUT:
			if (param->tmpref.buffer && rsp->result == TEEC_SUCCESS)
				memcpy(param->tmpref.buffer, (char *)c->bounce + p->offset,
				       new_size < p->size ? new_size : p->size);
			if (rsp->result == TEEC_SUCCESS || rsp->result == TEEC_ERROR_SHORT_BUFFER)
				param->tmpref.size = new_size;
			break;
		case TEEC_MEMREF_WHOLE:
		case TEEC_MEMREF_PARTIAL_OUTPUT:
		case TEEC_MEMREF_PARTIAL_INOUT: {
			TEEC_SharedMemory *shm = param->memref.parent;
			uint32_t ta = TEEC_PARAM_TYPE_GET(req->param_types, i);
			if (ta != TA_MEMREF_OUT && ta != TA_MEMREF_INOUT)
				break;
			if (shm->imp.shadow_buffer && rsp->result == TEEC_SUCCESS)
				memcpy((char *)shm->buffer + p->offset,
				       (char *)shm->imp.shadow_buffer + p->offset,
				       new_size < p->size ? new_size : p->size);
			if (t != TEEC_MEMREF_WHOLE &&
			    (rsp->result == TEEC_SUCCESS || rsp->result == TEEC_ERROR_SHORT_BUFFER))
				param->memref.size = new_size;
			break;
		}
		default:
			break;
		}
	}
}

/* Open, invoke: translate, round trip, copy back. */
static TEEC_Result call(struct context_rec *c, struct msim_request *req, TEEC_Operation *op,
			uint32_t *returnOrigin, uint32_t *session_out)
{
	struct msim_response rsp;
	uint32_t origin = TEEC_ORIGIN_API;
	TEEC_Result res;

	pthread_mutex_lock(&c->lock);
	res = build_request(c, op, req);
	if (res == TEEC_ERROR_TARGET_DEAD)
		origin = TEEC_ORIGIN_TEE;
	if (res == TEEC_SUCCESS) {
		origin = TEEC_ORIGIN_COMMS;
		res = roundtrip(c, req, -1, &rsp);
		if (res == TEEC_SUCCESS) {
			finish_request(c, op, req, &rsp);
			res = rsp.result;
			origin = rsp.origin;
			if (session_out)
				*session_out = rsp.session;
		} else {
			origin = TEEC_ORIGIN_TEE;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (returnOrigin)
		*returnOrigin = origin;
	return res;
}

TEEC_Result TEEC_OpenSession(TEEC_Context *context, TEEC_Session *session,
			     const TEEC_UUID *destination, uint32_t connectionMethod,
			     const void *connectionData, TEEC_Operation *operation,
			     uint32_t *returnOrigin)
{
	struct msim_request req;
	struct context_rec *c = context ? find_context(context->imp.fd) : NULL;
	uint32_t id = 0;

	if (returnOrigin)
		*returnOrigin = TEEC_ORIGIN_API;
	if (!c || !session || !destination)
		return TEEC_ERROR_BAD_PARAMETERS;
	memset(&req, 0, sizeof(req));
	/* as libteec's setup_client_data: a group login names its group (a gid_t); the simulator, as
	 * the kernel would, derives the identity from the caller's credentials and checks membership */
	switch (connectionMethod) {
	case TEEC_LOGIN_GROUP:
	case TEEC_LOGIN_GROUP_APPLICATION:
		if (!connectionData)
			return TEEC_ERROR_BAD_PARAMETERS;
		memcpy(&req.login_gid, connectionData, sizeof(req.login_gid));
		break;
	case TEEC_LOGIN_PUBLIC:
	case TEEC_LOGIN_USER:
	case TEEC_LOGIN_APPLICATION:
	case TEEC_LOGIN_USER_APPLICATION:
		break;
	default:
		return TEEC_ERROR_BAD_PARAMETERS;
	}
	req.op = MSIM_OPEN_SESSION;
	req.login = connectionMethod;
	req.uuid_time_low = destination->timeLow;
	req.uuid_time_mid = destination->timeMid;
	req.uuid_time_hi_and_version = destination->timeHiAndVersion;
	memcpy(req.uuid_clock_seq_and_node, destination->clockSeqAndNode, 8);
	TEEC_Result res = call(c, &req, operation, returnOrigin, &id);
	if (res == TEEC_SUCCESS) {
		session->imp.ctx = context;
		session->imp.session_id = id;
	}
	return res;
}

void TEEC_CloseSession(TEEC_Session *session)
{
	struct msim_request req;
	struct msim_response rsp;
	struct context_rec *c;

	if (!session || !session->imp.ctx)
		return;
	c = find_context(session->imp.ctx->imp.fd);
	if (c) {
		memset(&req, 0, sizeof(req));
		req.op = MSIM_CLOSE_SESSION;
		req.session = session->imp.session_id;
		pthread_mutex_lock(&c->lock);
		roundtrip(c, &req, -1, &rsp);
		pthread_mutex_unlock(&c->lock);
	}
	session->imp.ctx = NULL;
}

TEEC_Result TEEC_InvokeCommand(TEEC_Session *session, uint32_t commandID,
			       TEEC_Operation *operation, uint32_t *returnOrigin)
{
	struct msim_request req;
	struct context_rec *c;

	if (returnOrigin)
		*returnOrigin = TEEC_ORIGIN_API;
	if (!session || !session->imp.ctx)
		return TEEC_ERROR_BAD_PARAMETERS;
	c = find_context(session->imp.ctx->imp.fd);
	if (!c)
		return TEEC_ERROR_BAD_PARAMETERS;
	memset(&req, 0, sizeof(req));
	req.op = MSIM_INVOKE;
	req.session = session->imp.session_id;
	req.command = commandID;
	return call(c, &req, operation, returnOrigin, NULL);
}

static TEEC_Result share(TEEC_Context *context, TEEC_SharedMemory *shm, int registered)
{
	struct context_rec *c = context ? find_context(context->imp.fd) : NULL;
	void *base = NULL;

	if (!c || !shm || (registered && !shm->buffer && shm->size))
		return TEEC_ERROR_BAD_PARAMETERS;
	pthread_mutex_lock(&c->lock);
	uint32_t id = shm_create(c, shm->size, &base);
	pthread_mutex_unlock(&c->lock);
	if (!id)
		return c->dead ? TEEC_ERROR_TARGET_DEAD : TEEC_ERROR_OUT_OF_MEMORY;
	shm->imp.id = (int)id;
	shm->imp.alloced_size = shm->size;
	shm->imp.registered_fd = -1;
	shm->imp.flags = shm->flags;
	if (registered) {
		shm->imp.shadow_buffer = base;
	} else {
		shm->imp.shadow_buffer = NULL;
		shm->buffer = base;
	}
	return TEEC_SUCCESS;
}

TEEC_Result TEEC_RegisterSharedMemory(TEEC_Context *context, TEEC_SharedMemory *sharedMem)
{
	return share(context, sharedMem, 1);
}

TEEC_Result TEEC_AllocateSharedMemory(TEEC_Context *context, TEEC_SharedMemory *sharedMem)
{
	return share(context, sharedMem, 0);
}

void TEEC_ReleaseSharedMemory(TEEC_SharedMemory *shm)
{
	if (!shm || shm->imp.id <= 0 || shm->imp.id >= MSIM_MAX_SHM)
		return;
	struct context_rec *c = find_context(shm_table[shm->imp.id].ctx_fd);
	if (c)
		pthread_mutex_lock(&c->lock);
	shm_destroy(c, (uint32_t)shm->imp.id);
	if (c)
		pthread_mutex_unlock(&c->lock);
	if (!shm->imp.shadow_buffer)
		shm->buffer = NULL;
	shm->imp.shadow_buffer = NULL;
	shm->imp.id = -1;
}

void TEEC_RequestCancellation(TEEC_Operation *operation)
{
	(void)operation; /* the simulator runs commands to completion, as a non-cancellable TA does */
}
