"""A GDB remote-protocol (RSP) server for one partition: ``spk launch --gdb``.

gdb connects over TCP on 127.0.0.1 (never another interface) and sees one
x86-64 thread: the partition's vCPU, kernel and apps alike, through the
partition's own address space. The stub is ring 1's :class:`spgs.system.Debugger`:
ring 1 calls :meth:`GdbStub.on_stop` whenever the partition stops, and the
whole system stands still (no virtual time passes) until gdb resumes it.
Everything it does goes through ring 0's public debugging mechanisms
(:class:`spk.DebugSession`): breakpoints are engine hooks, never bytes
written into guest memory, and memory is read through the partition's page
tables, so gdb sees nothing another partition or ring 0 owns.

Packets served: qSupported (PacketSize, qXfer:features:read, swbreak,
QStartNoAckMode), the target description, ``?``, ``g``/``G``, ``p``/``P``,
``m``/``M``/``X``, ``Z0``/``z0`` and ``Z1``/``z1`` (both are hooks), ``c``,
``s``, ``C``/``S`` (the signal is ignored), ``vCont``, ``D``, ``k``,
``vKill``, qAttached, qC, qfThreadInfo, ``H``, ``T``; anything else gets the
empty "unsupported" reply, a malformed packet ``E01``, a refused access
``E`` with the SPK's status code. The x87 and SSE registers are described
(gdb's amd64 layout needs them) and reported unavailable.

Errors: :class:`GdbStubError` when the port cannot be bound.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import sys
from collections.abc import Callable
from typing import IO

from spgs.system import DebugAction, System
from spk import DebugError, DebugSession, DebugStop
from spk.abi import Status

HOST = "127.0.0.1"
DEFAULT_PORT = 1234
#: Largest packet gdb may send us (hex, as qSupported says it).
PACKET_SIZE = 0x4000
_SIGTRAP, _SIGKILL, _SIGSEGV = 5, 9, 11

# The registers gdb sees, in the target description's order: (name, bytes, spk name or None).
# None: described (gdb's amd64 layout requires x87 and SSE) but unavailable.
_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")  # fmt: skip
_X87 = tuple(f"st{i}" for i in range(8))
_X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
_XMM = tuple(f"xmm{i}" for i in range(16))
REGISTER_LAYOUT: tuple[tuple[str, int, str | None], ...] = (
    *((name, 8, name) for name in _GPRS),
    ("rip", 8, "rip"),
    ("eflags", 4, "rflags"),
    *((seg, 4, seg) for seg in ("cs", "ss", "ds", "es", "fs", "gs")),
    *((name, 10, None) for name in _X87),
    *((name, 4, None) for name in _X87_CONTROL),
    *((name, 16, None) for name in _XMM),
    ("mxcsr", 4, None),
    ("fs_base", 8, "fs_base"),
    ("gs_base", 8, "gs_base"),
    ("cr3", 8, "cr3"),
)


def _target_xml() -> str:
    """The target description: gdb's amd64 core, SSE and segments features, plus cr3."""

    def reg(name: str, bits: int, kind: str, group: str = "") -> str:
        extra = f' group="{group}"' if group else ""
        return f'<reg name="{name}" bitsize="{bits}" type="{kind}"{extra}/>'

    core = [reg(n, 64, "int64") for n in _GPRS[:6]]
    core += [reg("rbp", 64, "data_ptr"), reg("rsp", 64, "data_ptr")]
    core += [reg(n, 64, "int64") for n in _GPRS[8:]]
    core += [reg("rip", 64, "code_ptr"), reg("eflags", 32, "i386_eflags")]
    core += [reg(s, 32, "int32") for s in ("cs", "ss", "ds", "es", "fs", "gs")]
    core += [reg(n, 80, "i387_ext") for n in _X87]
    core += [reg(n, 32, "int", "float") for n in _X87_CONTROL]
    flags = "".join(
        f'<field name="{name}" start="{bit}" end="{bit}"/>'
        for bit, name in ((0, "CF"), (1, ""), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"),
                          (10, "DF"), (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"), (18, "AC"), (19, "VIF"),
                          (20, "VIP"), (21, "ID"))
    )  # fmt: skip
    vec = (
        '<vector id="v8bf16" type="bfloat16" count="8"/><vector id="v8h" type="ieee_half" count="8"/>'
        '<vector id="v4f" type="ieee_single" count="4"/><vector id="v2d" type="ieee_double" count="2"/>'
        '<vector id="v16i8" type="int8" count="16"/><vector id="v8i16" type="int16" count="8"/>'
        '<vector id="v4i32" type="int32" count="4"/><vector id="v2i64" type="int64" count="2"/>'
        '<union id="vec128"><field name="v8_bfloat16" type="v8bf16"/><field name="v8_half" type="v8h"/>'
        '<field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/>'
        '<field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/>'
        '<field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>'
        '<field name="uint128" type="uint128"/></union>'
    )
    mxcsr = "".join(
        f'<field name="{name}" start="{bit}" end="{bit}"/>'
        for bit, name in ((0, "IE"), (1, "DE"), (2, "ZE"), (3, "OE"), (4, "UE"), (5, "PE"), (6, "DAZ"), (7, "IM"),
                          (8, "DM"), (9, "ZM"), (10, "OM"), (11, "UM"), (12, "PM"), (15, "FZ"))
    )  # fmt: skip
    sse = [reg(n, 128, "vec128", "vector") for n in _XMM] + [reg("mxcsr", 32, "i386_mxcsr", "vector")]
    return (
        '<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">'
        "<target><architecture>i386:x86-64</architecture>"
        f'<feature name="org.gnu.gdb.i386.core"><flags id="i386_eflags" size="4">{flags}</flags>'
        + "".join(core)
        + f'</feature><feature name="org.gnu.gdb.i386.sse">{vec}<flags id="i386_mxcsr" size="4">{mxcsr}</flags>'
        + "".join(sse)
        + '</feature><feature name="org.gnu.gdb.i386.segments">'
        + reg("fs_base", 64, "int")
        + reg("gs_base", 64, "int")
        + '</feature><feature name="org.spk.partition">'
        + reg("cr3", 64, "int64", "system")
        + "</feature></target>"
    )


TARGET_XML = _target_xml().encode()


class GdbStubError(Exception):
    """The stub cannot serve (the port is taken, say)."""


class _Disconnected(Exception):
    """gdb went away."""


class _BadPacket(Exception):
    """A packet the stub cannot parse: answered with E01."""


def _checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def _hex_int(text: bytes) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise _BadPacket(f"not a hex number: {text[:40]!r}") from None


def _unhex(text: bytes) -> bytes:
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise _BadPacket("not hex data") from None


def _unescape(data: bytes) -> bytes:
    """Binary data of an X packet: ``}`` escapes the next byte (xor 0x20)."""
    out = bytearray()
    it = iter(data)
    for byte in it:
        if byte == 0x7D:
            nxt = next(it, None)
            if nxt is None:
                raise _BadPacket("escape at the end of the data")
            out.append(nxt ^ 0x20)
        else:
            out.append(byte)
    return bytes(out)


class GdbStub:
    """Serves one gdb connection for one partition; ring 1's debugger (spgs.system.Debugger).

    ``port`` 0 asks the system for a free port (see :attr:`port`). The
    connection is accepted when the partition first stops (before its first
    instruction), so gdb may connect any time after :meth:`listen`.
    ``log`` receives one line per notable event (connection, detach, end).
    """

    def __init__(self, partition: str, port: int = DEFAULT_PORT, *, log: IO[str] | None = None) -> None:
        self.partition = partition
        self._wanted_port = port
        self._log = log or sys.stderr
        self._server: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._buffer = bytearray()
        self._ack = True
        self._awaiting_stop = False  # gdb resumed the target and waits for a stop reply
        self._session: DebugSession | None = None
        self._stop: DebugStop | None = None
        self._handlers: dict[int, Callable[[bytes], bytes | DebugAction]] = {
            ord("?"): lambda _b: self._stop_reply(),
            ord("g"): self._read_registers,
            ord("G"): self._write_registers,
            ord("p"): self._read_register,
            ord("P"): self._write_register,
            ord("m"): self._read_memory,
            ord("M"): self._write_memory,
            ord("X"): self._write_binary,
            ord("Z"): self._insert_breakpoint,
            ord("z"): self._remove_breakpoint,
            ord("c"): lambda body: self._resume(body, step=False),
            ord("s"): lambda body: self._resume(body, step=True),
            ord("C"): lambda body: self._resume(body.partition(b";")[2], step=False),
            ord("S"): lambda body: self._resume(body.partition(b";")[2], step=True),
            ord("H"): lambda _b: b"OK",
            ord("T"): lambda _b: b"OK",
            ord("D"): self._detach,
            ord("q"): self._query,
            ord("Q"): self._set,
            ord("v"): self._v_packet,
        }

    # -- the listening socket ----------------------------------------------------------
    @property
    def port(self) -> int:
        """The port actually bound (after :meth:`listen`)."""
        return self._server.getsockname()[1] if self._server is not None else self._wanted_port

    def listen(self) -> int:
        """Bind 127.0.0.1:port and listen; returns the port. Errors: GdbStubError."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((HOST, self._wanted_port))
            server.listen(1)
        except OSError as exc:
            server.close()
            raise GdbStubError(f"cannot listen on {HOST}:{self._wanted_port}: {exc.strerror or exc}") from None
        self._server = server
        return self.port

    def close(self) -> None:
        """Close the connection and the listening socket (idempotent)."""
        for sock in (self._conn, self._server):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._conn = self._server = None

    # -- spgs.system.Debugger ------------------------------------------------------------
    def on_stop(self, session: DebugSession, stop: DebugStop) -> DebugAction:
        """Report the stop to gdb and serve its requests until it resumes, detaches or kills."""
        self._session, self._stop = session, stop
        try:
            if self._conn is None:
                if self._server is None:
                    return "detach"  # the connection is over: run on undebugged
                self._accept()
            elif self._awaiting_stop:
                self._send(self._stop_reply())
            self._awaiting_stop = False
            return self._serve()
        except _Disconnected:
            self._say("gdb disconnected: the partition runs on, undebugged")
            self.close()
            return "detach"

    def on_end(self, state: str, exit_code: int | None) -> None:
        """Tell a waiting gdb that the partition is gone (or the run over), then close."""
        if self._conn is not None and self._awaiting_stop:
            try:
                if state == "exited":
                    self._send(b"W%02x" % ((exit_code or 0) & 0xFF))
                else:
                    text = f"spk: {self.partition} is {state}\n" if state != "over" else "spk: the run is over\n"
                    self._send(b"O" + text.encode().hex().encode())
                    self._send(b"X%02x" % (_SIGSEGV if state == "faulted" else _SIGKILL))
            except _Disconnected:
                pass
        self._say(f"{self.partition} is {state}: gdb session over" if state != "over" else "run over: gdb session over")
        self.close()

    def interrupt_requested(self) -> bool:
        """True when gdb sent Ctrl-C while the partition ran (checked between windows)."""
        conn = self._conn
        if conn is None or not self._awaiting_stop:
            return False
        try:
            readable, _w, _x = select.select([conn], [], [], 0)
            if not readable:
                return False
            data = conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._say("gdb disconnected: the partition runs on, undebugged")
            if self._session is not None:
                self._session.close()
            self.close()
            return False
        if b"\x03" in data:
            self._buffer += data.replace(b"\x03", b"")
            return True
        self._buffer += data
        return False

    # -- connection and framing --------------------------------------------------------------
    def _accept(self) -> None:
        assert self._server is not None
        conn, _peer = self._server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = conn
        self._server.close()
        self._server = None
        self._say(f"gdb connected: {self.partition} is stopped")

    def _say(self, text: str) -> None:
        self._log.write(f"spk: {text}\n")
        self._log.flush()

    def _recv_more(self) -> None:
        assert self._conn is not None
        try:
            data = self._conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            raise _Disconnected
        self._buffer += data

    def _read_packet(self) -> bytes:
        """The next packet's payload (acknowledged); Ctrl-C bytes are dropped (already stopped)."""
        while True:
            start = self._buffer.find(b"$")
            if start < 0:
                self._buffer.clear()
                self._recv_more()
                continue
            del self._buffer[:start]
            end = self._buffer.find(b"#")
            if end < 0 or len(self._buffer) < end + 3:
                if len(self._buffer) > 2 * PACKET_SIZE + 16:
                    self._buffer.clear()  # no end in sight: garbage
                self._recv_more()
                continue
            payload = bytes(self._buffer[1:end])
            checksum = bytes(self._buffer[end + 1 : end + 3])
            del self._buffer[: end + 3]
            if self._ack:
                ok = re.fullmatch(rb"[0-9a-fA-F]{2}", checksum) and int(checksum, 16) == _checksum(payload)
                self._write(b"+" if ok else b"-")
                if not ok:
                    continue
            return payload

    def _write(self, data: bytes) -> None:
        assert self._conn is not None
        try:
            self._conn.sendall(data)
        except OSError:
            raise _Disconnected from None

    def _send(self, payload: bytes) -> None:
        escaped = re.sub(rb"[#$}*]", lambda m: b"}" + bytes([m.group()[0] ^ 0x20]), payload)
        frame = b"$" + escaped + b"#%02x" % _checksum(escaped)
        for _attempt in range(10):
            self._write(frame)
            if not self._ack:
                return
            while True:
                while not self._buffer:
                    self._recv_more()
                ack = bytes(self._buffer[:1])
                del self._buffer[:1]
                if ack in (b"+", b"-"):
                    break
                if ack == b"$":  # gdb sent a packet instead of an ack: keep it
                    self._buffer[:0] = b"$"
                    return
            if ack == b"+":
                return

    # -- the command loop ------------------------------------------------------------------------
    def _serve(self) -> DebugAction:
        while True:
            packet = self._read_packet()
            action = self._dispatch(packet)
            if isinstance(action, bytes):
                self._send(action)
                if packet == b"QStartNoAckMode":
                    self._ack = False
                continue
            if action in ("continue", "step"):
                self._awaiting_stop = True
            return action

    def _dispatch(self, packet: bytes) -> bytes | DebugAction:
        if not packet:
            return b""
        if packet == b"k":
            self._say("gdb killed the run")
            self.close()
            return "kill"
        handler = self._handlers.get(packet[0])
        if handler is None:
            return b""
        try:
            return handler(packet[1:])
        except _BadPacket:
            return b"E01"
        except DebugError as exc:
            return b"E%02x" % (int(exc.status) & 0xFF)
        except (ValueError, OverflowError, KeyError, IndexError) as exc:  # a packet no rule above foresaw
            self._say(f"gdb packet {packet[:40]!r} refused: {exc}")
            return b"E01"

    def _stop_reply(self) -> bytes:
        stop = self._stop
        extra = b"swbreak:;" if stop is not None and stop.kind == "breakpoint" else b""
        return b"T%02xthread:1;%s" % (_SIGTRAP, extra)

    # -- registers ------------------------------------------------------------------------------
    def _registers(self) -> dict[str, int]:
        assert self._session is not None
        return self._session.registers()

    @staticmethod
    def _encode(value: int | None, size: int) -> bytes:
        if value is None:
            return b"xx" * size
        return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little").hex().encode()

    def _read_registers(self, _body: bytes) -> bytes:
        regs = self._registers()
        return b"".join(self._encode(regs[spk] if spk else None, size) for _n, size, spk in REGISTER_LAYOUT)

    def _read_register(self, body: bytes) -> bytes:
        number = _hex_int(body)
        if not 0 <= number < len(REGISTER_LAYOUT):
            return b"E00"
        _name, size, spk = REGISTER_LAYOUT[number]
        return self._encode(self._registers()[spk] if spk else None, size)

    def _set_register(self, number: int, raw: bytes, current: dict[str, int]) -> None:
        if not 0 <= number < len(REGISTER_LAYOUT):
            raise _BadPacket(f"no register {number}")
        _name, size, spk = REGISTER_LAYOUT[number]
        if len(raw) != size:
            raise _BadPacket(f"register {number} takes {size} bytes")
        if spk is None:
            if raw.strip(b"\x00"):
                raise DebugError(Status.NOT_SUPPORTED, f"register {number} is not available")
            return
        value = int.from_bytes(raw, "little")
        if value == current[spk] & ((1 << (8 * size)) - 1):
            return  # unchanged (G rewrites every register): nothing to check
        if size < 8:
            value |= current[spk] & ~((1 << (8 * size)) - 1)
        assert self._session is not None
        self._session.write_register(spk, value)

    def _write_register(self, body: bytes) -> bytes:
        number, sep, value = body.partition(b"=")
        if not sep:
            raise _BadPacket("P needs n=value")
        self._set_register(_hex_int(number), _unhex(value), self._registers())
        return b"OK"

    def _write_registers(self, body: bytes) -> bytes:
        raw = _unhex(body.replace(b"x", b"0"))
        current = self._registers()
        offset = 0
        for number, (_name, size, spk) in enumerate(REGISTER_LAYOUT):
            if offset + size > len(raw):
                break
            if spk is not None:
                self._set_register(number, raw[offset : offset + size], current)
            offset += size
        return b"OK"

    # -- memory ---------------------------------------------------------------------------------
    @staticmethod
    def _address_length(text: bytes) -> tuple[int, int]:
        address, sep, length = text.partition(b",")
        if not sep:
            raise _BadPacket("addr,length expected")
        return _hex_int(address), _hex_int(length)

    def _read_memory(self, body: bytes) -> bytes:
        assert self._session is not None
        address, length = self._address_length(body)
        length = min(length, (PACKET_SIZE - 16) // 2)
        try:
            return self._session.read_memory(address, length).hex().encode()
        except DebugError as exc:
            # RSP allows a shorter reply: give the readable pages before the hole, if any.
            page_end = min(address + length, (address | 0xFFF) + 1)
            done = bytearray()
            while address + len(done) < address + length:
                try:
                    done += self._session.read_memory(address + len(done), page_end - address - len(done))
                except DebugError:
                    break
                page_end = min(address + length, page_end + 0x1000)
            if not done:
                return b"E%02x" % (int(exc.status) & 0xFF)
            return bytes(done).hex().encode()

    def _write_memory(self, body: bytes) -> bytes:
        header, sep, data = body.partition(b":")
        if not sep:
            raise _BadPacket("M needs addr,length:data")
        return self._store(header, _unhex(data))

    def _write_binary(self, body: bytes) -> bytes:
        header, sep, data = body.partition(b":")
        if not sep:
            raise _BadPacket("X needs addr,length:data")
        return self._store(header, _unescape(data))

    def _store(self, header: bytes, data: bytes) -> bytes:
        assert self._session is not None
        address, length = self._address_length(header)
        if length != len(data):
            raise _BadPacket("length does not match the data")
        self._session.write_memory(address, data)
        return b"OK"

    # -- breakpoints ------------------------------------------------------------------------------
    def _breakpoint_address(self, body: bytes) -> int | None:
        parts = body.split(b";")[0].split(b",")
        if len(parts) != 3:
            raise _BadPacket("Z/z needs type,addr,kind")
        if parts[0] not in (b"0", b"1"):  # watchpoints: not supported
            return None
        return _hex_int(parts[1])

    def _insert_breakpoint(self, body: bytes) -> bytes:
        address = self._breakpoint_address(body)
        if address is None:
            return b""
        assert self._session is not None
        self._session.set_breakpoint(address)
        return b"OK"

    def _remove_breakpoint(self, body: bytes) -> bytes:
        address = self._breakpoint_address(body)
        if address is None:
            return b""
        assert self._session is not None
        self._session.clear_breakpoint(address)
        return b"OK"

    # -- running ---------------------------------------------------------------------------------
    def _resume(self, address: bytes, *, step: bool) -> bytes | DebugAction:
        if address:
            assert self._session is not None
            self._session.write_register("rip", _hex_int(address))
        return "step" if step else "continue"

    def _detach(self, _body: bytes) -> DebugAction:
        self._send(b"OK")
        self._say("gdb detached: the partition runs on, undebugged")
        self.close()
        return "detach"

    def _v_packet(self, body: bytes) -> bytes | DebugAction:
        if body == b"Cont?":
            return b"vCont;c;C;s;S"
        if body.startswith(b"Cont;"):
            for action in body[5:].split(b";"):
                verb, _sep, thread = action.partition(b":")
                if thread and thread not in (b"1", b"-1", b"p1.1", b"p1.-1"):
                    continue
                if verb[:1] in (b"c", b"C"):
                    return "continue"
                if verb[:1] in (b"s", b"S"):
                    return "step"
                raise _BadPacket(f"vCont action {verb!r}")
            return b"E01"
        if body.startswith(b"Kill"):
            self._send(b"OK")
            self._say("gdb killed the run")
            self.close()
            return "kill"
        if body == b"MustReplyEmpty":
            return b""
        return b""

    def _query(self, body: bytes) -> bytes:
        if body.startswith(b"Supported"):
            return b"PacketSize=%x;qXfer:features:read+;swbreak+;QStartNoAckMode+" % PACKET_SIZE
        if body.startswith(b"Xfer:features:read:"):
            annex, _sep, span = body[len(b"Xfer:features:read:") :].partition(b":")
            if annex != b"target.xml":
                return b"E00"
            offset, length = self._address_length(span)
            chunk = TARGET_XML[offset : offset + length]
            return (b"l" if offset + length >= len(TARGET_XML) else b"m") + chunk
        if body == b"Attached" or body.startswith(b"Attached:"):
            return b"1"  # gdb detaches on quit: the system runs on
        if body == b"C":
            return b"QC1"
        if body == b"fThreadInfo":
            return b"m1"
        if body == b"sThreadInfo":
            return b"l"
        if body.startswith(b"ThreadExtraInfo"):
            return f"partition {self.partition}".encode().hex().encode()
        if body.startswith(b"Symbol"):
            return b"OK"
        return b""

    def _set(self, body: bytes) -> bytes:
        return b"OK" if body == b"StartNoAckMode" else b""


def parse_target(text: str) -> tuple[str, int]:
    """``PARTITION[:PORT]`` -> (partition, port); port 0 means any free port.

    Errors: ValueError for an empty name or a port outside 0..65535.
    """
    name, sep, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not name:
        raise ValueError("a partition name is needed (PARTITION[:PORT])")
    if not sep:
        return name, DEFAULT_PORT
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535")
    return name, int(port_text)


def attach(system: System, target: str, *, log: IO[str]) -> GdbStub:
    """Make ``system`` stop the partition ``target`` names and serve gdb for it.

    Listens at once (before anything runs) and prints one line saying how
    to connect. Errors: ValueError (bad target, no such running partition),
    GdbStubError (the port cannot be bound).
    """
    name, port = parse_target(target)
    if system.pid_of(name) is None:
        known = ", ".join(p.name for p in system.plans)
        raise ValueError(f"no running partition {name!r} (partitions: {known})")
    stub = GdbStub(name, port, log=log)
    bound = stub.listen()
    system.attach_debugger(name, stub)
    log.write(
        f"spk: {name} waits before its first instruction; gdb stub listening on {HOST}:{bound}; "
        f"connect with: gdb -ex 'set architecture i386:x86-64' -ex 'target remote localhost:{bound}'\n"
    )
    log.flush()
    return stub
