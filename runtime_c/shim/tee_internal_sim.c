/*
 * The TEE Internal Core API functions a mirrorc TA calls, implemented for the host simulator.
 *
 * TEE_Malloc draws from a budget of TA_DATA_SIZE bytes (set by the simulator's main), like the
 * TA heap in OP-TEE, so a TA whose memory plan is too small fails here as it would on a board.
 *
 * Persistent objects (TEE_STORAGE_PRIVATE, data stream only) are files named by the hex of their
 * object ID under $MIRRORC_TA_STORAGE, else storage/ beside the simulator's executable, so they
 * outlive sessions and simulator restarts. Every write is flushed (fdatasync), as OP-TEE's secure
 * storage commits each write. An open for writing without TEE_DATA_FLAG_SHARE_WRITE holds an
 * exclusive lock: a second simulator of the same TA waits where OP-TEE (one TA instance) would
 * have serialised the sessions.
 *
 * The current client's identity ("gpd.client.identity" of TEE_PROPSET_CURRENT_CLIENT) is what the
 * simulator's main set in msim_client_identity before entering the TA, as OP-TEE's core hands the TA
 * the identity the REE kernel derived at session open; TEE_GetSystemTime is CLOCK_MONOTONIC, or
 * msim_fixed_time_ms when msim_clock_fixed is set (a fuzzing harness drives the clock).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tee_internal_api.h"

/* Heap budget and use, in bytes; 0 = unlimited. Set by ta_sim_main.c from TA_DATA_SIZE. */
size_t msim_heap_limit;
size_t msim_heap_used;
size_t msim_heap_peak;

/* The client of the session the TA is serving (set by ta_sim_main.c or a fuzzing harness). */
TEE_Identity msim_client_identity = {TEE_LOGIN_PUBLIC, {0, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}}};

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

/* ---- properties and time --------------------------------------------------------------------- */

TEE_Result TEE_GetPropertyAsIdentity(TEE_PropSetHandle propsetOrEnumerator, const char *name,
				     TEE_Identity *value)
{
	if (!name || !value)
		TEE_Panic(TEE_ERROR_BAD_PARAMETERS);
	/* the only identity-valued property a mirrorc TA reads; others are absent here */
	if (propsetOrEnumerator != TEE_PROPSET_CURRENT_CLIENT || strcmp(name, "gpd.client.identity") != 0)
		return TEE_ERROR_ITEM_NOT_FOUND;
	*value = msim_client_identity;
	return TEE_SUCCESS;
}

/* A clock the harness sets (runtime_c/fuzz/ta_fuzz.c), so that the rate limit is reproducible. */
int msim_clock_fixed;
uint64_t msim_fixed_time_ms;

void TEE_GetSystemTime(TEE_Time *time)
{
	struct timespec ts;

	if (!time)
		TEE_Panic(TEE_ERROR_BAD_PARAMETERS);
	if (msim_clock_fixed) {
		time->seconds = (uint32_t)(msim_fixed_time_ms / 1000);
		time->millis = (uint32_t)(msim_fixed_time_ms % 1000);
		return;
	}
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		TEE_Panic(TEE_ERROR_GENERIC);
	time->seconds = (uint32_t)ts.tv_sec;
	time->millis = (uint32_t)(ts.tv_nsec / 1000000);
}

/* ---- persistent objects ---------------------------------------------------------------------- */

struct __TEE_ObjectHandle {
	int fd;
	uint32_t flags;
};

/* The storage directory (created on first use) joined with the object ID in hex; 0 on success. */
static int object_path(const void *id, size_t id_len, char *path, size_t size)
{
	char dir[PATH_MAX];
	const char *env = getenv("MIRRORC_TA_STORAGE");
	const unsigned char *bytes = id;
	size_t n;

	if (env && *env) {
		n = (size_t)snprintf(dir, sizeof(dir), "%s", env);
	} else {
		ssize_t got = readlink("/proc/self/exe", dir, sizeof(dir) - 1);
		char *slash;
		if (got <= 0)
			return -1;
		dir[got] = '\0';
		slash = strrchr(dir, '/');
		if (!slash)
			return -1;
		n = (size_t)snprintf(slash + 1, sizeof(dir) - (size_t)(slash + 1 - dir), "storage");
		n += (size_t)(slash + 1 - dir);
	}
	if (n >= sizeof(dir) || (mkdir(dir, 0700) != 0 && errno != EEXIST))
		return -1;
	n = (size_t)snprintf(path, size, "%s/", dir);
	for (size_t i = 0; i < id_len && n + 3 < size; i++)
		n += (size_t)snprintf(path + n, size - n, "%02x", bytes[i]);
	return n + 3 < size ? 0 : -1;
}

static TEE_Result open_object(uint32_t storage, const void *id, size_t id_len, uint32_t flags, int create,
			      TEE_ObjectHandle *object)
{
	char path[PATH_MAX];
	int oflags = (flags & (TEE_DATA_FLAG_ACCESS_WRITE | TEE_DATA_FLAG_ACCESS_WRITE_META)) ? O_RDWR : O_RDONLY;
	int fd;

	if (!object)
		TEE_Panic(TEE_ERROR_BAD_PARAMETERS);
	*object = TEE_HANDLE_NULL;
	if (storage != TEE_STORAGE_PRIVATE || !id || id_len == 0 || id_len > TEE_OBJECT_ID_MAX_LEN)
		return TEE_ERROR_ITEM_NOT_FOUND;
	if (object_path(id, id_len, path, sizeof(path)) != 0)
		return TEE_ERROR_STORAGE_NO_SPACE;
	if (create)
		oflags = O_RDWR | O_CREAT | ((flags & TEE_DATA_FLAG_OVERWRITE) ? O_TRUNC : O_EXCL);
	fd = open(path, oflags | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno == ENOENT ? TEE_ERROR_ITEM_NOT_FOUND :
		       errno == EEXIST ? TEE_ERROR_ACCESS_CONFLICT : TEE_ERROR_GENERIC;
	/* writers without SHARE_WRITE are exclusive; readers share */
	if (flock(fd, (oflags & O_RDWR) && !(flags & TEE_DATA_FLAG_SHARE_WRITE) ? LOCK_EX : LOCK_SH) != 0) {
		close(fd);
		return TEE_ERROR_ACCESS_CONFLICT;
	}
	*object = malloc(sizeof(**object));
	if (!*object) {
		close(fd);
		return TEE_ERROR_OUT_OF_MEMORY;
	}
	(*object)->fd = fd;
	(*object)->flags = flags | (create ? TEE_DATA_FLAG_ACCESS_WRITE : 0);
	return TEE_SUCCESS;
}

TEE_Result TEE_OpenPersistentObject(uint32_t storageID, const void *objectID, size_t objectIDLen,
				    uint32_t flags, TEE_ObjectHandle *object)
{
	return open_object(storageID, objectID, objectIDLen, flags, 0, object);
}

TEE_Result TEE_CreatePersistentObject(uint32_t storageID, const void *objectID, size_t objectIDLen,
				      uint32_t flags, TEE_ObjectHandle attributes,
				      const void *initialData, size_t initialDataLen,
				      TEE_ObjectHandle *object)
{
	TEE_ObjectHandle h;
	TEE_Result res;

	(void)attributes; /* pure data objects only */
	res = open_object(storageID, objectID, objectIDLen, flags, 1, &h);
	if (res != TEE_SUCCESS)
		return res;
	if (initialDataLen && (res = TEE_WriteObjectData(h, initialData, initialDataLen)) != TEE_SUCCESS) {
		TEE_CloseObject(h);
		return res;
	}
	if (lseek(h->fd, 0, SEEK_SET) != 0) { /* the data position starts at 0 */
		TEE_CloseObject(h);
		return TEE_ERROR_GENERIC;
	}
	if (object)
		*object = h;
	else
		TEE_CloseObject(h);
	return TEE_SUCCESS;
}

TEE_Result TEE_ReadObjectData(TEE_ObjectHandle object, void *buffer, size_t size, size_t *count)
{
	size_t done = 0;

	if (!object || !count || !(object->flags & TEE_DATA_FLAG_ACCESS_READ))
		TEE_Panic(TEE_ERROR_BAD_PARAMETERS);
	while (done < size) {
		ssize_t got = read(object->fd, (char *)buffer + done, size - done);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return TEE_ERROR_GENERIC;
		if (got == 0)
			break; /* end of stream: a short count, not an error */
		done += (size_t)got;
	}
	*count = done;
	return TEE_SUCCESS;
}

TEE_Result TEE_WriteObjectData(TEE_ObjectHandle object, const void *buffer, size_t size)
{
	size_t done = 0;

	if (!object || !(object->flags & TEE_DATA_FLAG_ACCESS_WRITE))
		TEE_Panic(TEE_ERROR_BAD_PARAMETERS);
	while (done < size) {
		ssize_t put = write(object->fd, (const char *)buffer + done, size - done);
		if (put < 0 && errno == EINTR)
			continue;
		if (put <= 0)
			return errno == ENOSPC ? TEE_ERROR_STORAGE_NO_SPACE : TEE_ERROR_GENERIC;
		done += (size_t)put;
	}
	return fdatasync(object->fd) == 0 ? TEE_SUCCESS : TEE_ERROR_GENERIC;
}

TEE_Result TEE_SeekObjectData(TEE_ObjectHandle object, intmax_t offset, TEE_Whence whence)
{
	int how = whence == TEE_DATA_SEEK_SET ? SEEK_SET : whence == TEE_DATA_SEEK_CUR ? SEEK_CUR : SEEK_END;

	if (!object)
		TEE_Panic(TEE_ERROR_BAD_PARAMETERS);
	if (offset > (intmax_t)LONG_MAX || offset < -(intmax_t)LONG_MAX)
		return TEE_ERROR_OVERFLOW;
	if (lseek(object->fd, (off_t)offset, how) < 0)
		return errno == EINVAL ? TEE_ERROR_BAD_PARAMETERS : TEE_ERROR_OVERFLOW;
	return TEE_SUCCESS;
}

void TEE_CloseObject(TEE_ObjectHandle object)
{
	if (!object)
		return;
	close(object->fd); /* drops the lock */
	free(object);
}
