/*
 * The client identity a TA sees at session open ("gpd.client.identity"), derived as OP-TEE's REE
 * side derives it: Linux's drivers/tee/tee_core.c, tee_session_calc_client_uuid():
 *   TEEC_LOGIN_PUBLIC  -> the nil UUID;
 *   TEEC_LOGIN_USER    -> UUIDv5(namespace, "uid=%x") of the caller's effective uid;
 *   TEEC_LOGIN_GROUP   -> UUIDv5(namespace, "gid=%x") of the group named in the connection data,
 *                         if the caller is in it (effective or supplementary), else EPERM;
 *   any other login    -> EINVAL (mainline Linux derives no application identity).
 * The caller's credentials come from the kernel (SO_PEERCRED on the socket and /proc/<pid>/status),
 * never from the request: a client cannot claim another identity. The simulator's main includes this.
 */
#ifndef MIRRORC_SIM_CLIENT_IDENTITY_H
#define MIRRORC_SIM_CLIENT_IDENTITY_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "tee_internal_api.h"

/* Linux's tee_client_uuid_ns (a random UUIDv4 chosen as the namespace of client UUIDs) */
static const uint8_t msim_client_uuid_ns[16] = {0x58, 0xac, 0x9c, 0xa0, 0x20, 0x86, 0x46, 0x83,
						0xa1, 0xb8, 0xec, 0x4b, 0xc0, 0x8e, 0x01, 0xb6};

static uint32_t msim_rol(uint32_t x, int n)
{
	return (x << n) | (x >> (32 - n));
}

/* SHA-1 (FIPS 180-4) of a short message: the namespace and a name of at most 64 bytes. */
static void msim_sha1(const uint8_t *msg, size_t len, uint8_t out[20])
{
	uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
	uint8_t block[192];
	size_t padded = (len + 9 + 63) / 64 * 64;

	if (padded > sizeof(block))
		return; /* callers pass at most 80 bytes */
	memset(block, 0, padded);
	memcpy(block, msg, len);
	block[len] = 0x80;
	for (int i = 0; i < 8; i++)
		block[padded - 1 - i] = (uint8_t)((uint64_t)len * 8 >> (8 * i));
	for (size_t off = 0; off < padded; off += 64) {
		uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
		for (int t = 0; t < 16; t++)
			w[t] = (uint32_t)block[off + 4 * t] << 24 | (uint32_t)block[off + 4 * t + 1] << 16 |
			       (uint32_t)block[off + 4 * t + 2] << 8 | block[off + 4 * t + 3];
		for (int t = 16; t < 80; t++)
			w[t] = msim_rol(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
		for (int t = 0; t < 80; t++) {
			uint32_t f, k;
			if (t < 20)
				f = (b & c) | (~b & d), k = 0x5A827999;
			else if (t < 40)
				f = b ^ c ^ d, k = 0x6ED9EBA1;
			else if (t < 60)
				f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
			else
				f = b ^ c ^ d, k = 0xCA62C1D6;
			uint32_t tmp = msim_rol(a, 5) + f + e + k + w[t];
			e = d, d = c, c = msim_rol(b, 30), b = a, a = tmp;
		}
		h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
	}
	for (int i = 0; i < 20; i++)
		out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

/* UUIDv5 of `name` in the client namespace, as the TA's TEE_UUID (fields from big-endian octets). */
static void msim_client_uuid(const char *name, TEE_UUID *uuid)
{
	uint8_t msg[80], hash[20];
	size_t n = strlen(name);

	if (n > sizeof(msg) - 16)
		n = sizeof(msg) - 16;
	memcpy(msg, msim_client_uuid_ns, 16);
	memcpy(msg + 16, name, n);
	msim_sha1(msg, 16 + n, hash);
	hash[6] = (uint8_t)((hash[6] & 0x0F) | 0x50); /* version 5 */
	hash[8] = (uint8_t)((hash[8] & 0x3F) | 0x80); /* RFC 4122 variant */
	uuid->timeLow = (uint32_t)hash[0] << 24 | (uint32_t)hash[1] << 16 | (uint32_t)hash[2] << 8 | hash[3];
	uuid->timeMid = (uint16_t)(hash[4] << 8 | hash[5]);
	uuid->timeHiAndVersion = (uint16_t)(hash[6] << 8 | hash[7]);
	memcpy(uuid->clockSeqAndNode, hash + 8, 8);
}

/* Whether process `pid` is in group `gid` (its effective or a supplementary group). */
static int msim_in_group(pid_t pid, gid_t egid, uint32_t gid)
{
	char path[64], line[4096];
	FILE *f;
	int found = egid == (gid_t)gid;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return found;
	while (!found && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Groups:", 7) != 0)
			continue;
		for (char *p = line + 7, *end; *p; p = end) {
			unsigned long g = strtoul(p, &end, 10);
			if (end == p)
				break;
			found = g == gid;
			if (found)
				break;
		}
	}
	fclose(f);
	return found;
}

/* The identity of the client at the other end of `sock` for a session opened with `login` (and
 * `gid` for a group login); 0, or the errno Linux's driver returns (EINVAL, EPERM). */
static int msim_client_identity_of(int sock, uint32_t login, uint32_t gid, TEE_Identity *id)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char name[32];

	memset(id, 0, sizeof(*id));
	id->login = login;
	if (login == TEE_LOGIN_PUBLIC)
		return 0;
	if (login != TEE_LOGIN_USER && login != TEE_LOGIN_GROUP)
		return EINVAL;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return EPERM;
	if (login == TEE_LOGIN_USER) {
		snprintf(name, sizeof(name), "uid=%x", (unsigned)cred.uid); /* SO_PEERCRED's uid is the euid */
	} else {
		if (!msim_in_group(cred.pid, cred.gid, gid))
			return EPERM;
		snprintf(name, sizeof(name), "gid=%x", (unsigned)gid);
	}
	msim_client_uuid(name, &id->uuid);
	return 0;
}

#endif /* MIRRORC_SIM_CLIENT_IDENTITY_H */
