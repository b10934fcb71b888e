/*
 * TA property flags, as OP-TEE's user_ta_header.h defines them, for the host build: the simulator
 * reads TA_UUID, TA_FLAGS, TA_STACK_SIZE and TA_DATA_SIZE from the TA's user_ta_header_defines.h.
 */
#ifndef USER_TA_HEADER_H
#define USER_TA_HEADER_H

#define TA_FLAG_SINGLE_INSTANCE     (1u << 2)
#define TA_FLAG_MULTI_SESSION       (1u << 3)
#define TA_FLAG_INSTANCE_KEEP_ALIVE (1u << 4)

#endif /* USER_TA_HEADER_H */
