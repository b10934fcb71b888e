/*
 * GlobalPlatform TEE Internal Core API 1.3 -- the subset a mirrorc TA uses, for building the TA
 * outside OP-TEE (the host simulator, and the freestanding aarch64 compile check).
 *
 * Names, values and types follow the GP specification as OP-TEE's libutee exports them
 * (tee_api_defines.h, tee_api_types.h, tee_internal_api.h) without the 1.1 compatibility layer:
 * sizes are size_t, parameter types uint32_t. On a board the TA is built against OP-TEE's own
 * headers instead; nothing here may differ from them in what it declares.
 *
 * Only freestanding headers are included, so this states exactly what a TA sees.
 */
#ifndef TEE_INTERNAL_API_H
#define TEE_INTERNAL_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TEE_CORE_API_MAJOR_VERSION 1U
#define TEE_CORE_API_MINOR_VERSION 3U

/* Return codes */
typedef uint32_t TEE_Result;
#define TEE_SUCCESS                0x00000000
#define TEE_ERROR_GENERIC          0xFFFF0000
#define TEE_ERROR_ACCESS_DENIED    0xFFFF0001
#define TEE_ERROR_CANCEL           0xFFFF0002
#define TEE_ERROR_ACCESS_CONFLICT  0xFFFF0003
#define TEE_ERROR_EXCESS_DATA      0xFFFF0004
#define TEE_ERROR_BAD_FORMAT       0xFFFF0005
#define TEE_ERROR_BAD_PARAMETERS   0xFFFF0006
#define TEE_ERROR_BAD_STATE        0xFFFF0007
#define TEE_ERROR_ITEM_NOT_FOUND   0xFFFF0008
#define TEE_ERROR_NOT_IMPLEMENTED  0xFFFF0009
#define TEE_ERROR_NOT_SUPPORTED    0xFFFF000A
#define TEE_ERROR_NO_DATA          0xFFFF000B
#define TEE_ERROR_OUT_OF_MEMORY    0xFFFF000C
#define TEE_ERROR_BUSY             0xFFFF000D
#define TEE_ERROR_COMMUNICATION    0xFFFF000E
#define TEE_ERROR_SECURITY         0xFFFF000F
#define TEE_ERROR_SHORT_BUFFER     0xFFFF0010
#define TEE_ERROR_EXTERNAL_CANCEL  0xFFFF0011
#define TEE_ERROR_OVERFLOW         0xFFFF300F
#define TEE_ERROR_TARGET_DEAD      0xFFFF3024
#define TEE_ERROR_CORRUPT_OBJECT   0xF0100001
#define TEE_ERROR_STORAGE_NO_SPACE 0xFFFF3041

/* Parameter types */
#define TEE_PARAM_TYPE_NONE          0
#define TEE_PARAM_TYPE_VALUE_INPUT   1
#define TEE_PARAM_TYPE_VALUE_OUTPUT  2
#define TEE_PARAM_TYPE_VALUE_INOUT   3
#define TEE_PARAM_TYPE_MEMREF_INPUT  5
#define TEE_PARAM_TYPE_MEMREF_OUTPUT 6
#define TEE_PARAM_TYPE_MEMREF_INOUT  7

#define TEE_NUM_PARAMS 4
#define TEE_PARAM_TYPES(t0, t1, t2, t3) \
	((t0) | ((t1) << 4) | ((t2) << 8) | ((t3) << 12))
#define TEE_PARAM_TYPE_GET(t, i) ((((uint32_t)(t)) >> ((i) * 4)) & 0xF)

/* Login types */
#define TEE_LOGIN_PUBLIC      0x00000000
#define TEE_LOGIN_USER        0x00000001
#define TEE_LOGIN_GROUP       0x00000002
#define TEE_LOGIN_APPLICATION 0x00000004
#define TEE_LOGIN_APPLICATION_USER  0x00000005
#define TEE_LOGIN_APPLICATION_GROUP 0x00000006
#define TEE_LOGIN_TRUSTED_APP 0xF0000000

/* Origin codes */
#define TEE_ORIGIN_API         0x00000001
#define TEE_ORIGIN_COMMS       0x00000002
#define TEE_ORIGIN_TEE         0x00000003
#define TEE_ORIGIN_TRUSTED_APP 0x00000004

/* TEE_Malloc hints */
#define TEE_MALLOC_FILL_ZERO 0x00000000
#define TEE_MALLOC_NO_FILL   0x00000001
#define TEE_MALLOC_NO_SHARE  0x00000002

typedef struct {
	uint32_t timeLow;
	uint16_t timeMid;
	uint16_t timeHiAndVersion;
	uint8_t clockSeqAndNode[8];
} TEE_UUID;

/* Who opened the session: the login type and the client UUID the REE kernel derived from it. */
typedef struct {
	uint32_t login;
	TEE_UUID uuid;
} TEE_Identity;

/* Time since an arbitrary origin, monotonic while the TA instance lives */
typedef struct {
	uint32_t seconds;
	uint32_t millis;
} TEE_Time;

typedef union {
	struct {
		void *buffer;
		size_t size;
	} memref;
	struct {
		uint32_t a;
		uint32_t b;
	} value;
} TEE_Param;

/* OP-TEE marks the entry points for export from the TA's ELF. */
#ifndef TA_EXPORT
#define TA_EXPORT __attribute__((visibility("default")))
#endif

/* System API */
void TEE_Panic(TEE_Result panicCode);
void *TEE_Malloc(size_t size, uint32_t hint);
void *TEE_Realloc(void *buffer, size_t newSize);
void TEE_Free(void *buffer);
void TEE_MemMove(void *dest, const void *src, size_t size);
int32_t TEE_MemCompare(const void *buffer1, const void *buffer2, size_t size);
void TEE_MemFill(void *buff, uint32_t x, size_t size);

/* Property Access API: the pseudo-handles of the three property sets, and the identity getter */
typedef struct __TEE_PropSetHandle *TEE_PropSetHandle;
#define TEE_PROPSET_TEE_IMPLEMENTATION ((TEE_PropSetHandle)0xFFFFFFFD)
#define TEE_PROPSET_CURRENT_CLIENT     ((TEE_PropSetHandle)0xFFFFFFFE)
#define TEE_PROPSET_CURRENT_TA         ((TEE_PropSetHandle)0xFFFFFFFF)
TEE_Result TEE_GetPropertyAsIdentity(TEE_PropSetHandle propsetOrEnumerator, const char *name,
				     TEE_Identity *value);

/* Time API */
void TEE_GetSystemTime(TEE_Time *time);

/* Trusted Storage API for data and keys: the persistent-object subset (data stream only) */
typedef struct __TEE_ObjectHandle *TEE_ObjectHandle;
#define TEE_HANDLE_NULL ((TEE_ObjectHandle)0)
#define TEE_STORAGE_PRIVATE             0x00000001
#define TEE_OBJECT_ID_MAX_LEN           64
#define TEE_DATA_FLAG_ACCESS_READ       0x00000001
#define TEE_DATA_FLAG_ACCESS_WRITE      0x00000002
#define TEE_DATA_FLAG_ACCESS_WRITE_META 0x00000004
#define TEE_DATA_FLAG_SHARE_READ        0x00000010
#define TEE_DATA_FLAG_SHARE_WRITE       0x00000020
#define TEE_DATA_FLAG_OVERWRITE         0x00000400
typedef enum { TEE_DATA_SEEK_SET = 0, TEE_DATA_SEEK_CUR = 1, TEE_DATA_SEEK_END = 2 } TEE_Whence;

TEE_Result TEE_OpenPersistentObject(uint32_t storageID, const void *objectID, size_t objectIDLen,
				    uint32_t flags, TEE_ObjectHandle *object);
TEE_Result TEE_CreatePersistentObject(uint32_t storageID, const void *objectID, size_t objectIDLen,
				      uint32_t flags, TEE_ObjectHandle attributes,
				      const void *initialData, size_t initialDataLen,
				      TEE_ObjectHandle *object);
TEE_Result TEE_ReadObjectData(TEE_ObjectHandle object, void *buffer, size_t size, size_t *count);
TEE_Result TEE_WriteObjectData(TEE_ObjectHandle object, const void *buffer, size_t size);
TEE_Result TEE_SeekObjectData(TEE_ObjectHandle object, intmax_t offset, TEE_Whence whence);
void TEE_CloseObject(TEE_ObjectHandle object);

/* Entry points a TA implements */
TEE_Result TA_EXPORT TA_CreateEntryPoint(void);
void TA_EXPORT TA_DestroyEntryPoint(void);
TEE_Result TA_EXPORT TA_OpenSessionEntryPoint(uint32_t paramTypes,
					      TEE_Param params[TEE_NUM_PARAMS],
					      void **sessionContext);
void TA_EXPORT TA_CloseSessionEntryPoint(void *sessionContext);
TEE_Result TA_EXPORT TA_InvokeCommandEntryPoint(void *sessionContext, uint32_t commandID,
						uint32_t paramTypes,
						TEE_Param params[TEE_NUM_PARAMS]);

#ifdef __cplusplus
}
#endif

#endif /* TEE_INTERNAL_API_H */
