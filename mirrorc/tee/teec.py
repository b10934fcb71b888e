"""The GlobalPlatform TEE Client API for Python, over any libteec-compatible shared library.

One interface for both worlds' plumbing: on a board `Context.optee()` loads OP-TEE's libteec.so and
talks to the real TEE; elsewhere `Context.simulator(build_dir)` loads mirrorc's Client API shim
(runtime_c/shim/teec_sim.c) and starts the build's TA simulator in its own process. The structures
below have the layout of optee_client's tee_client_api.h, which the shim shares.

This process only ever holds what the normal world holds: the library and the buffers it sends."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from mirrorc.errors import MirrorcError
from passes import contract

if TYPE_CHECKING:  # for the annotations only: the ctypes binding itself needs no numpy
    import numpy as np

# Return codes and origins (tee_client_api.h)
TEEC_SUCCESS = 0x00000000
TEEC_ERROR_GENERIC = 0xFFFF0000
TEEC_ERROR_ACCESS_DENIED = 0xFFFF0001
TEEC_ERROR_BAD_FORMAT = 0xFFFF0005
TEEC_ERROR_BAD_PARAMETERS = 0xFFFF0006
TEEC_ERROR_BAD_STATE = 0xFFFF0007
TEEC_ERROR_ITEM_NOT_FOUND = 0xFFFF0008
TEEC_ERROR_NOT_IMPLEMENTED = 0xFFFF0009
TEEC_ERROR_NOT_SUPPORTED = 0xFFFF000A
TEEC_ERROR_OUT_OF_MEMORY = 0xFFFF000C
TEEC_ERROR_BUSY = 0xFFFF000D
TEEC_ERROR_COMMUNICATION = 0xFFFF000E
TEEC_ERROR_SHORT_BUFFER = 0xFFFF0010
TEEC_ERROR_TARGET_DEAD = 0xFFFF3024
ERROR_NAMES = {v: k for k, v in globals().items() if k.startswith("TEEC_ERROR_") or k == "TEEC_SUCCESS"}

TEEC_ORIGIN_API, TEEC_ORIGIN_COMMS, TEEC_ORIGIN_TEE, TEEC_ORIGIN_TRUSTED_APP = 1, 2, 3, 4
ORIGIN_NAMES = {1: "API", 2: "COMMS", 3: "TEE", 4: "TRUSTED_APP"}

# Parameter types
TEEC_NONE = 0x0
TEEC_VALUE_INPUT, TEEC_VALUE_OUTPUT, TEEC_VALUE_INOUT = 0x1, 0x2, 0x3
TEEC_MEMREF_TEMP_INPUT, TEEC_MEMREF_TEMP_OUTPUT, TEEC_MEMREF_TEMP_INOUT = 0x5, 0x6, 0x7
TEEC_MEMREF_WHOLE = 0xC
TEEC_MEMREF_PARTIAL_INPUT, TEEC_MEMREF_PARTIAL_OUTPUT, TEEC_MEMREF_PARTIAL_INOUT = 0xD, 0xE, 0xF
TEEC_MEM_INPUT, TEEC_MEM_OUTPUT = 0x1, 0x2
TEEC_LOGIN_PUBLIC, TEEC_LOGIN_USER, TEEC_LOGIN_GROUP, TEEC_LOGIN_APPLICATION = 0x0, 0x1, 0x2, 0x4


def param_types(p0: int = TEEC_NONE, p1: int = TEEC_NONE, p2: int = TEEC_NONE, p3: int = TEEC_NONE) -> int:
    return p0 | (p1 << 4) | (p2 << 8) | (p3 << 12)


class TEEC_Context(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("reg_mem", ctypes.c_bool), ("memref_null", ctypes.c_bool)]


class TEEC_UUID(ctypes.Structure):
    _fields_ = [
        ("timeLow", ctypes.c_uint32),
        ("timeMid", ctypes.c_uint16),
        ("timeHiAndVersion", ctypes.c_uint16),
        ("clockSeqAndNode", ctypes.c_uint8 * 8),
    ]

    @classmethod
    def from_uuid(cls, u: uuidlib.UUID) -> TEEC_UUID:
        f = u.fields
        return cls(f[0], f[1], f[2], (ctypes.c_uint8 * 8)(*u.bytes[8:]))


class _SharedMemoryImp(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_int),
        ("alloced_size", ctypes.c_size_t),
        ("shadow_buffer", ctypes.c_void_p),
        ("registered_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
    ]


class TEEC_SharedMemory(ctypes.Structure):
    _fields_ = [
        ("buffer", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
        ("imp", _SharedMemoryImp),
    ]


class TEEC_TempMemoryReference(ctypes.Structure):
    _fields_ = [("buffer", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class TEEC_RegisteredMemoryReference(ctypes.Structure):
    _fields_ = [("parent", ctypes.POINTER(TEEC_SharedMemory)), ("size", ctypes.c_size_t), ("offset", ctypes.c_size_t)]


class TEEC_Value(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint32)]


class TEEC_Parameter(ctypes.Union):
    _fields_ = [("tmpref", TEEC_TempMemoryReference), ("memref", TEEC_RegisteredMemoryReference), ("value", TEEC_Value)]


class TEEC_Session(ctypes.Structure):
    _fields_ = [("ctx", ctypes.POINTER(TEEC_Context)), ("session_id", ctypes.c_uint32)]


class TEEC_Operation(ctypes.Structure):
    _fields_ = [
        ("started", ctypes.c_uint32),
        ("paramTypes", ctypes.c_uint32),
        ("params", TEEC_Parameter * 4),
        ("session", ctypes.POINTER(TEEC_Session)),
    ]


def _padded(struct_type):
    """Room after a structure the library owns the inside of: libteec versions differ in the size
    of the implementation-defined fields, and must never write past what we allocated."""
    return type(
        f"_Padded{struct_type.__name__}",
        (ctypes.Structure,),
        {"_fields_": [("s", struct_type), ("_room", ctypes.c_uint8 * 64)]},
    )


_PaddedContext, _PaddedSession, _PaddedOperation = map(_padded, (TEEC_Context, TEEC_Session, TEEC_Operation))


class TeecError(MirrorcError):
    """A TEE Client API call that did not return TEEC_SUCCESS."""

    def __init__(self, what: str, result: int, origin: int, guard: dict | None = None):
        self.result, self.origin = result, origin
        refusal = contract.ta_refusal(result, guard) if origin == TEEC_ORIGIN_TRUSTED_APP else None
        #: the TA defence that refused the call (one line, with the plan's settings), else None
        self.refusal = refusal
        name = ERROR_NAMES.get(result) or f"0x{result:08x}"
        code = f"0x{result:08x}, origin {ORIGIN_NAMES.get(origin, origin)}"
        if refusal:
            super().__init__(f"the TA refused: {refusal} ({what}: {code})")
        else:
            super().__init__(f"{what}: {name} ({code})")


def _load(library: str | os.PathLike) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(library))
    except OSError as e:
        raise MirrorcError(f"{library}: cannot load the TEE Client API library ({e})") from None
    P = ctypes.POINTER
    sigs = {
        "TEEC_InitializeContext": (ctypes.c_uint32, [ctypes.c_char_p, P(TEEC_Context)]),
        "TEEC_FinalizeContext": (None, [P(TEEC_Context)]),
        "TEEC_OpenSession": (
            ctypes.c_uint32,
            [
                P(TEEC_Context),
                P(TEEC_Session),
                P(TEEC_UUID),
                ctypes.c_uint32,
                ctypes.c_void_p,
                P(TEEC_Operation),
                P(ctypes.c_uint32),
            ],
        ),
        "TEEC_CloseSession": (None, [P(TEEC_Session)]),
        "TEEC_InvokeCommand": (
            ctypes.c_uint32,
            [P(TEEC_Session), ctypes.c_uint32, P(TEEC_Operation), P(ctypes.c_uint32)],
        ),
        "TEEC_AllocateSharedMemory": (ctypes.c_uint32, [P(TEEC_Context), P(TEEC_SharedMemory)]),
        "TEEC_RegisterSharedMemory": (ctypes.c_uint32, [P(TEEC_Context), P(TEEC_SharedMemory)]),
        "TEEC_ReleaseSharedMemory": (None, [P(TEEC_SharedMemory)]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class Closing:
    """`with` support for objects that hold a TEE resource and release it in `close()`."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ClosedOnCollect(Closing):
    """A Closing that also releases its resource when garbage-collected (a context, a runtime)."""

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Context(ClosedOnCollect):
    """A TEEC_Context: a connection to one TEE (for the simulator: one simulator process)."""

    def __init__(self, library: str | os.PathLike, name: str | None = None):
        self.lib = _load(library)
        self._box = _PaddedContext()
        self.ctx = self._box.s
        res = self.lib.TEEC_InitializeContext(name.encode() if name else None, ctypes.byref(self.ctx))
        if res != TEEC_SUCCESS:
            raise TeecError(f"TEEC_InitializeContext({name or 'default TEE'})", res, TEEC_ORIGIN_API)
        self._open = True
        self._sessions: list[Session] = []
        self._shms: list[SharedMemory] = []

    @classmethod
    def optee(cls) -> Context:
        """OP-TEE through the system's libteec (a board with the OP-TEE driver)."""
        library = os.environ.get("MIRRORC_LIBTEEC") or ctypes.util.find_library("teec")
        if not library:
            raise MirrorcError("--tee optee: libteec not found (install optee_client or set MIRRORC_LIBTEEC)")
        return cls(library)

    @classmethod
    def simulator(cls, build_dir: str | os.PathLike) -> Context:
        """The build's TA in the simulator, in its own process."""
        from mirrorc.backend import ta

        return cls(ta.client_library(), str(ta.simulator(build_dir)))

    def open_session(
        self,
        uuid: str | uuidlib.UUID,
        login: int = TEEC_LOGIN_PUBLIC,
        gid: int | None = None,
        guard: dict | None = None,
    ) -> Session:
        """A session with `login` (a group login names its group `gid`); `guard`, the plan's defences,
        only words a refusal."""
        return Session(self, uuidlib.UUID(str(uuid)), login, gid, guard)

    def allocate_shared_memory(self, size: int, flags: int = TEEC_MEM_INPUT | TEEC_MEM_OUTPUT) -> SharedMemory:
        return SharedMemory(self, size, flags)

    def register_shared_memory(self, array: np.ndarray, flags: int = TEEC_MEM_INPUT | TEEC_MEM_OUTPUT) -> SharedMemory:
        """Share a C-contiguous numpy array with the TEE (kept alive while registered)."""
        if not array.flags.c_contiguous:
            raise MirrorcError("register_shared_memory: the array must be C-contiguous")
        return SharedMemory(self, array.nbytes, flags, buffer=array)

    def close(self) -> None:
        if self._open:
            for s in list(self._sessions):
                s.close()
            for m in list(self._shms):
                m.release()
            self.lib.TEEC_FinalizeContext(ctypes.byref(self.ctx))
            self._open = False


class SharedMemory:
    """TEEC_AllocateSharedMemory (memory both worlds map; `view()` is a writable memoryview), or with
    `buffer` (a numpy array) TEEC_RegisterSharedMemory of that caller-owned memory."""

    def __init__(self, context: Context, size: int, flags: int, buffer=None):
        self.context = context
        self._buffer = buffer  # registered memory must outlive the registration
        self.shm = TEEC_SharedMemory(None if buffer is None else buffer.ctypes.data, size, flags)
        call = context.lib.TEEC_AllocateSharedMemory if buffer is None else context.lib.TEEC_RegisterSharedMemory
        res = call(ctypes.byref(context.ctx), ctypes.byref(self.shm))
        if res != TEEC_SUCCESS:
            raise TeecError(call.__name__, res, TEEC_ORIGIN_API)
        self.size = size
        context._shms.append(self)

    def view(self) -> memoryview:
        return memoryview((ctypes.c_uint8 * self.size).from_address(self.shm.buffer)).cast("B")

    def release(self) -> None:
        if self in self.context._shms:
            self.context.lib.TEEC_ReleaseSharedMemory(ctypes.byref(self.shm))
            self.context._shms.remove(self)


class Operation:
    """A reusable TEEC_Operation. Parameters are set with the `temp_*`, `value_*` and `memref`
    methods; the buffers referenced must stay alive until `invoke` returns."""

    def __init__(self, *types: int):
        self._box = _PaddedOperation()
        self.op = self._box.s
        self.ref = ctypes.byref(self.op)  # made once: invoke is on the per-image path
        self.op.paramTypes = param_types(*types)
        self._keep: list = [None] * 4  # Python objects whose memory the operation points into

    def temp(self, i: int, buffer: Any, size: int | None = None) -> Operation:
        """A temporary memref on a bytes-like object (numpy array, bytearray, ctypes buffer) or an
        address (then with its `size`); `size` defaults to the object's size in bytes."""
        if buffer is None:
            addr, nbytes = None, 0
        elif isinstance(buffer, int):
            if size is None:
                raise MirrorcError(f"Operation.temp: parameter {i}: an address needs its size in bytes")
            addr, nbytes = buffer, size
        elif hasattr(buffer, "ctypes"):  # numpy
            addr, nbytes = buffer.ctypes.data, buffer.nbytes
        elif isinstance(buffer, (bytes, bytearray, memoryview)):
            buffer = (
                (ctypes.c_char * len(buffer)).from_buffer_copy(buffer)
                if isinstance(buffer, bytes)
                else (ctypes.c_char * len(buffer)).from_buffer(buffer)
            )
            addr, nbytes = ctypes.addressof(buffer), len(buffer)
        else:
            addr, nbytes = ctypes.addressof(buffer), ctypes.sizeof(buffer)
        self._keep[i] = buffer
        self.op.params[i].tmpref.buffer = addr
        self.op.params[i].tmpref.size = nbytes if size is None else size
        return self

    def value(self, i: int, a: int = 0, b: int = 0) -> Operation:
        self.op.params[i].value.a, self.op.params[i].value.b = a, b
        return self

    def memref(self, i: int, shm: SharedMemory, offset: int = 0, size: int | None = None) -> Operation:
        self._keep[i] = shm
        ref = self.op.params[i].memref
        ref.parent = ctypes.pointer(shm.shm)
        ref.offset, ref.size = offset, shm.size - offset if size is None else size
        return self

    def value_out(self, i: int) -> tuple[int, int]:
        return self.op.params[i].value.a, self.op.params[i].value.b

    def size_out(self, i: int) -> int:
        return self.op.params[i].tmpref.size


class Session(Closing):
    """A TEEC_Session with one TA."""

    def __init__(
        self,
        context: Context,
        uuid: uuidlib.UUID,
        login: int = TEEC_LOGIN_PUBLIC,
        gid: int | None = None,
        guard: dict | None = None,
    ):
        self.context = context
        self._box = _PaddedSession()
        self.session = self._box.s
        self.uuid = uuid
        self.guard = guard
        origin = ctypes.c_uint32(0)
        dest = TEEC_UUID.from_uuid(uuid)
        connection = None if gid is None else ctypes.byref(ctypes.c_uint32(gid))  # a gid_t, as libteec reads it
        res = context.lib.TEEC_OpenSession(
            ctypes.byref(context.ctx),
            ctypes.byref(self.session),
            ctypes.byref(dest),
            login,
            connection,
            None,
            ctypes.byref(origin),
        )
        if res != TEEC_SUCCESS:
            raise TeecError(f"TEEC_OpenSession({uuid})", res, origin.value, guard)
        self._invoke = context.lib.TEEC_InvokeCommand
        self._origin = ctypes.c_uint32(0)
        self._origin_ref = ctypes.byref(self._origin)
        self._session_ref = ctypes.byref(self.session)
        self._open = True
        context._sessions.append(self)

    def try_invoke(self, command: int, op: Operation | None = None) -> tuple[int, int]:
        """TEEC_InvokeCommand; returns (result, origin) without raising."""
        res = self._invoke(self._session_ref, command, op.ref if op else None, self._origin_ref)
        return res, self._origin.value

    def invoke(self, command: int, op: Operation | None = None) -> Operation | None:
        res = self._invoke(self._session_ref, command, op.ref if op else None, self._origin_ref)
        if res != TEEC_SUCCESS:
            raise TeecError(f"TEEC_InvokeCommand(0x{command:x})", res, self._origin.value, self.guard)
        return op

    def close(self) -> None:
        if self._open:
            self.context.lib.TEEC_CloseSession(self._session_ref)
            self._open = False
            self.context._sessions.remove(self)
