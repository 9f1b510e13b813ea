"""Verify a .tflite flatbuffer before anything reads it: bounds, identifiers, indices, data flow.

The generated Python schema reads wherever an offset points (struct.error, IndexError or a
nonsense value on a damaged file), so every file is walked here first, in the spirit of
flatbuffers' C++ Verifier: the root offset and "TFL3" identifier, then each table's vtable,
each field, vector, string and union of the tables edgeeff and the runtimes read, every
position and length checked against the file size before it is read; then the indices that
tie the tables together (tensor -> buffer, operator -> opcode and tensors, subgraph and
signature tensors, metadata -> buffer) and the out-of-flatbuffer buffers of the large-model
layout. Anything after the flatbuffer (edgeeff appends a zip holding labels.txt) is allowed.
"""

from __future__ import annotations

from edgeeff.core.errors import EdgeeffError
from edgeeff.tflite.schema import FILE_IDENTIFIER, SCHEMA_VERSION


class ModelFileError(EdgeeffError):
    """A file that is not a usable TFLite model; ``reason`` says what is wrong with it."""

    def __init__(self, path, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path + ': ' if self.path else ''}not a valid TFLite model ({reason})")


class NotAClassifierError(ModelFileError):
    """A well-formed TFLite model that is not an image classifier edgeeff can run."""

    def __init__(self, path, reason: str):
        super().__init__(path, reason)
        self.args = (f"{self.path + ': ' if self.path else ''}not an image classifier ({reason})",)


MAX_DEPTH = 64  # as flatbuffers::Verifier
MAX_TABLES = 1_000_000
_MAX_BYTES = 2**31 - 1  # a flatbuffer addresses at most 2 GB

_QUANT_DETAILS = {1: "CustomQuantization", 2: "BlockwiseQuantization", 3: "MultiAxisQuantization"}
_SPARSE_INDEX = {1: "Int32Vector", 2: "Uint16Vector", 3: "Uint8Vector"}
# BuiltinOptions / BuiltinOptions2 members that hold more than scalars, or whose scalars
# edgeeff's reader reads (convolution, fused-activation and MEAN options); the others (and
# unknown type codes) are checked as tables, their vtable and position: only the runtime reads
# their scalars, and LiteRT runs flatbuffers' own verifier over the whole model before it does
_BUILTIN_OPTIONS = {1: "Conv2DOptions", 2: "DepthwiseConv2DOptions",
                    3: "ConcatEmbeddingsOptions", 8: "FullyConnectedOptions", 11: "AddOptions",
                    17: "ReshapeOptions", 21: "MulOptions", 27: "ReducerOptions",
                    30: "SqueezeOptions", 111: "VarHandleOptions", 115: "BucketizeOptions"}
_BUILTIN_OPTIONS_2 = {
    2: "StablehloBroadcastInDimOptions", 3: "StablehloSliceOptions",
    4: "StablehloConvolutionOptions", 5: "StablehloCustomCallOptions",
    6: "StablehloReduceOptions", 7: "StablehloScatterOptions", 9: "StablehloDynamicSliceOptions",
    10: "StablehloPadOptions", 12: "StablehloDotGeneralOptions",
    13: "StablehloReduceWindowOptions", 16: "StablehloGatherOptions",
    17: "StablehloTransposeOptions", 21: "StableHLOCompositeOptions", 23: "StablehloCaseOptions",
}

# table -> {slot: "field:kind"}, slots and names as in TFLite's schema.fbs. Kinds: u8/i8/bool,
# u16, i32/u32/f32, u64/i64 scalars; str; [T] a vector of scalars T, [Name] of tables; Name a
# table; union@N a union whose type is the field in slot N (members: _UNIONS); - a slot skipped
_SCHEMA_TEXT = {
    "Model": "version:u32 operator_codes:[OperatorCode] subgraphs:[SubGraph] description:str "
             "buffers:[Buffer] metadata_buffer:[i32] metadata:[Metadata] "
             "signature_defs:[SignatureDef] external_buffer_groups:[ExternalBufferGroup] "
             "external_buffers:[ExternalBuffer]",
    "OperatorCode": "deprecated_builtin_code:i8 custom_code:str version:i32 builtin_code:i32",
    "SubGraph": "tensors:[Tensor] inputs:[i32] outputs:[i32] operators:[Operator] name:str "
                "debug_metadata_index:i32",
    "Tensor": "shape:[i32] type:i8 buffer:u32 name:str quantization:QuantizationParameters "
              "is_variable:bool sparsity:SparsityParameters shape_signature:[i32] has_rank:bool "
              "variant_tensors:[VariantSubType] external_buffer:u32",
    "VariantSubType": "shape:[i32] type:i8 has_rank:bool",
    "QuantizationParameters": "min:[f32] max:[f32] scale:[f32] zero_point:[i64] details_type:u8 "
                              "details:union@4 quantized_dimension:i32",
    "CustomQuantization": "custom:[u8]",
    "BlockwiseQuantization": "scales:i32 zero_points:i32 block_size:i32 block_shape:[i32]",
    "MultiAxisQuantization": "scales:i32 zero_points:i32 block_size:i32 "
                             "quantized_dimensions:[i32]",
    "SparsityParameters": "traversal_order:[i32] block_map:[i32] dim_metadata:[DimensionMetadata]",
    "DimensionMetadata": "format:i8 dense_size:i32 array_segments_type:u8 array_segments:union@2 "
                         "array_indices_type:u8 array_indices:union@4",
    "Int32Vector": "values:[i32]",
    "Uint16Vector": "values:[u16]",
    "Uint8Vector": "values:[u8]",
    "Buffer": "data:[u8] offset:u64 size:u64",
    "Operator": "opcode_index:u32 inputs:[i32] outputs:[i32] builtin_options_type:u8 "
                "builtin_options:union@3 custom_options:[u8] custom_options_format:i8 "
                "mutating_variable_inputs:[bool] intermediates:[i32] "
                "large_custom_options_offset:u64 large_custom_options_size:u64 "
                "builtin_options_2_type:u8 builtin_options_2:union@11 debug_metadata_index:i32",
    "Metadata": "name:str buffer:u32",
    "TensorMap": "name:str tensor_index:u32",
    "SignatureDef": "inputs:[TensorMap] outputs:[TensorMap] signature_key:str - "
                    "subgraph_index:u32",
    "ExternalBufferGroup": "name:str",
    "ExternalBuffer": "id:u32 group:u32 offset:u64 length:u64 packing:str",
    # union members with vectors or strings, or scalars the reader reads
    "Conv2DOptions": "padding:i8 stride_w:i32 stride_h:i32 fused_activation_function:i8",
    "DepthwiseConv2DOptions": "padding:i8 stride_w:i32 stride_h:i32 depth_multiplier:i32 "
                              "fused_activation_function:i8",
    "AddOptions": "fused_activation_function:i8",
    "MulOptions": "fused_activation_function:i8",
    "ReducerOptions": "keep_dims:bool",
    "ConcatEmbeddingsOptions": "num_channels:i32 num_columns_per_channel:[i32] "
                               "embedding_dim_per_channel:[i32]",
    "FullyConnectedOptions": "fused_activation_function:i8 - - - - quant_spec:[u8]",
    "ReshapeOptions": "new_shape:[i32]",
    "SqueezeOptions": "squeeze_dims:[i32]",
    "VarHandleOptions": "container:str shared_name:str",
    "BucketizeOptions": "boundaries:[f32]",
    "StablehloBroadcastInDimOptions": "broadcast_dimensions:[i64]",
    "StablehloSliceOptions": "start_indices:[i64] limit_indices:[i64] strides:[i64]",
    "StablehloConvolutionOptions": "window_strides:[i64] padding:[i64] lhs_dilation:[i64] "
                                   "rhs_dilation:[i64] window_reversal:[bool] - - "
                                   "input_spatial_dimensions:[i64] - - "
                                   "kernel_spatial_dimensions:[i64] - - "
                                   "output_spatial_dimensions:[i64] - - precision_config:[u32]",
    "StablehloCustomCallOptions": "call_target_name:str - backend_config:str - "
                                  "called_computations:[i32] custom_attributes:[u8]",
    "StablehloReduceOptions": "dimensions:[i64]",
    "StablehloScatterOptions": "- update_window_dims:[i64] inserted_window_dims:[i64] "
                               "scatter_dims_to_operand_dims:[i64]",
    "StablehloDynamicSliceOptions": "slice_sizes:[i64]",
    "StablehloPadOptions": "edge_padding_low:[i64] edge_padding_high:[i64] interior_padding:[i64]",
    "StablehloDotGeneralOptions": "lhs_batching_dimensions:[i64] rhs_batching_dimensions:[i64] "
                                  "lhs_contracting_dimensions:[i64] "
                                  "rhs_contracting_dimensions:[i64] precision_config:[u32]",
    "StablehloReduceWindowOptions": "window_dimensions:[i64] window_strides:[i64] "
                                    "base_dilations:[i64] window_dilations:[i64] padding:[i64]",
    "StablehloGatherOptions": "offset_dims:[i64] collapsed_slice_dims:[i64] "
                              "start_index_map:[i64] - slice_sizes:[i64]",
    "StablehloTransposeOptions": "permutation:[i64]",
    "StableHLOCompositeOptions": "name:str - composite_attributes:[u8]",
    "StablehloCaseOptions": "branch_subgraph_indices:[i32]",
}
_UNIONS = {  # (table, union field) -> {type code: member table}; other codes: any table
    ("QuantizationParameters", "details"): _QUANT_DETAILS,
    ("DimensionMetadata", "array_segments"): _SPARSE_INDEX,
    ("DimensionMetadata", "array_indices"): _SPARSE_INDEX,
    ("Operator", "builtin_options"): _BUILTIN_OPTIONS,
    ("Operator", "builtin_options_2"): _BUILTIN_OPTIONS_2,
}
_SCALAR_BYTES = {"u8": 1, "i8": 1, "bool": 1, "u16": 2, "i32": 4, "u32": 4, "f32": 4,
                 "u64": 8, "i64": 8}


def _parse_schema() -> dict[str, dict[int, tuple[str, object]]]:
    """table -> {slot: (field name, kind)}; kind: a scalar's byte count, "str", ("vec", item
    bytes), ("table", name), ("tables", name) or ("union", type slot, {type code: name})."""
    out: dict[str, dict[int, tuple[str, object]]] = {}
    for table, text in _SCHEMA_TEXT.items():
        fields = {}
        for slot, item in enumerate(text.split()):
            if item == "-":  # a scalar or deprecated slot nothing here reads
                continue
            name, kind = item.split(":")
            if kind in _SCALAR_BYTES:
                k: object = _SCALAR_BYTES[kind]
            elif kind == "str":
                k = "str"
            elif kind.startswith("[") and kind[1:-1] in _SCALAR_BYTES:
                k = ("vec", _SCALAR_BYTES[kind[1:-1]])
            elif kind.startswith("["):
                k = ("tables", kind[1:-1])
            elif kind.startswith("union@"):
                k = ("union", int(kind[6:]), _UNIONS[(table, name)])
            else:
                k = ("table", kind)
            fields[slot] = (name, k)
        out[table] = fields
    return out


SCHEMA = _parse_schema()

_SIGNATURES = [
    (b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"), (b"PK\x03\x04", "a zip archive"), (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an ELF executable"), (b"\x1f\x8b", "a gzip archive"),
]


class _Bad(Exception):
    pass


class _Walker:
    """Bounds-checked reads of one buffer; every method raises _Bad instead of reading past it."""

    def __init__(self, data: bytes):
        self.b = data
        self.n = len(data)
        self.tables = 0

    def need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or size < 0 or pos + size > self.n:
            raise _Bad(f"{what} at byte {pos} (+{size}) lies outside the file's {self.n} bytes")

    def aligned(self, pos: int, align: int, what: str) -> None:
        if pos % align:
            raise _Bad(f"{what} at byte {pos} is not {align}-byte aligned")

    def scalar(self, pos: int, size: int, what: str) -> None:
        self.need(pos, size, what)
        self.aligned(pos, size, what)

    def u8(self, pos: int) -> int:
        return self.b[pos]

    def u16(self, pos: int) -> int:
        return int.from_bytes(self.b[pos:pos + 2], "little")

    def u32(self, pos: int) -> int:
        return int.from_bytes(self.b[pos:pos + 4], "little")

    def i32(self, pos: int) -> int:
        return int.from_bytes(self.b[pos:pos + 4], "little", signed=True)

    def offset(self, pos: int, what: str) -> int:
        """Follow the uoffset at ``pos``; the target must lie in the file."""
        self.scalar(pos, 4, what)
        o = self.u32(pos)
        if o >= 2**31:
            raise _Bad(f"{what} at byte {pos}: offset {o} is negative or too large")
        self.need(pos + o, 1, what)
        return pos + o

    def vector(self, pos: int, elem: int, what: str) -> int:
        """Check the vector at ``pos`` (length then ``elem``-byte items); its length."""
        self.scalar(pos, 4, what)
        count = self.u32(pos)
        if count * elem > _MAX_BYTES:
            raise _Bad(f"{what} at byte {pos} claims {count} items")
        self.need(pos + 4, count * elem, f"{what} ({count} items)")
        return count

    def string(self, pos: int, what: str) -> None:
        n = self.vector(pos, 1, what)
        self.need(pos + 4 + n, 1, f"{what} terminator")
        if self.b[pos + 4 + n] != 0:
            raise _Bad(f"{what} at byte {pos} is not zero-terminated")

    def vtable(self, pos: int, what: str) -> tuple[int, int]:
        """(vtable position, vtable size) of the table at ``pos``, both checked."""
        self.scalar(pos, 4, what)
        vt = pos - self.i32(pos)
        self.scalar(vt, 2, f"{what} vtable")
        size = self.u16(vt)
        if size < 4 or size % 2:
            raise _Bad(f"{what} vtable at byte {vt} has a bad size {size}")
        self.need(vt, size, f"{what} vtable")
        return vt, size

    def field(self, pos: int, slot: int) -> int:
        """Position of ``slot`` in the (checked) table at ``pos``, 0 when absent."""
        vt = pos - self.i32(pos)
        off = 4 + 2 * slot
        if off >= self.u16(vt):
            return 0
        f = self.u16(vt + off)
        return pos + f if f else 0

    def table(self, pos: int, name: str | None, what: str, depth: int = 0) -> None:
        self.tables += 1
        if self.tables > MAX_TABLES or depth > MAX_DEPTH:
            raise _Bad("too many or too deeply nested tables")
        vt, size = self.vtable(pos, what)
        for slot, (field, kind) in (SCHEMA.get(name) or {}).items():
            off = 4 + 2 * slot
            f = self.u16(vt + off) if off < size else 0
            if f:
                self._field(pos, pos + f, kind, f"{name}.{field}", depth)

    def _field(self, table: int, p: int, kind, what: str, depth: int) -> None:
        if isinstance(kind, int):
            self.scalar(p, kind, what)
        elif kind == "str":
            self.string(self.offset(p, what), what)
        elif kind[0] == "vec":
            self.vector(self.offset(p, what), kind[1], what)
        elif kind[0] == "table":
            self.table(self.offset(p, what), kind[1], what, depth + 1)
        elif kind[0] == "tables":
            v = self.offset(p, what)
            for i in range(self.vector(v, 4, what)):
                self.table(self.offset(v + 4 + 4 * i, what), kind[1], f"{what}[{i}]", depth + 1)
        elif kind[0] == "union":
            tp = self.field(table, kind[1])
            if tp:
                self.scalar(tp, 1, f"{what} type")
            utype = self.u8(tp) if tp else 0
            if utype:
                self.table(self.offset(p, what), kind[2].get(utype), what, depth + 1)
        else:  # pragma: no cover - a mistake in SCHEMA
            raise AssertionError(kind)

    # reading helpers for the (verified) structure
    def get(self, pos: int, slot: int, size: int, default: int = 0, signed: bool = False) -> int:
        p = self.field(pos, slot)
        return int.from_bytes(self.b[p:p + size], "little", signed=signed) if p else default

    def items(self, pos: int, slot: int, elem: int = 4, signed: bool = True) -> list[int]:
        """Scalar vector at ``slot`` as ints (tables: their positions, with ``elem=0``)."""
        p = self.field(pos, slot)
        if not p:
            return []
        v = p + self.u32(p)
        n = self.u32(v)
        if elem == 0:
            return [v + 4 + 4 * i + self.u32(v + 4 + 4 * i) for i in range(n)]
        raw = self.b[v + 4:v + 4 + n * elem]
        return [int.from_bytes(raw[i:i + elem], "little", signed=signed)
                for i in range(0, n * elem, elem)]


def _not_a_flatbuffer(data: bytes) -> str | None:
    if not data:
        return "empty file"
    if data[4:8] == FILE_IDENTIFIER:
        return None
    for magic, what in _SIGNATURES:
        if data.startswith(magic):
            return f"it is {what}"
    if len(data) < 8:
        return f"only {len(data)} bytes"
    return f"no {FILE_IDENTIFIER.decode()} identifier at bytes 4-8"


def _check_indices(w: _Walker, root: int) -> None:
    version = w.get(root, 0, 4)
    if version != SCHEMA_VERSION:
        raise _Bad(f"schema version {version}, expected {SCHEMA_VERSION}")
    n_codes = len(w.items(root, 1, 0))
    subgraphs = w.items(root, 2, 0)
    buffers = w.items(root, 4, 0)
    if not subgraphs:
        raise _Bad("no subgraph")
    has_data = []
    for i, b in enumerate(buffers):
        off, size = w.get(b, 1, 8), w.get(b, 2, 8)
        if off > 1 and off + size > w.n:  # large-model layout: data after the flatbuffer
            raise _Bad(f"buffer {i} lies at bytes {off}..{off + size}, past the end of the file")
        p = w.field(b, 0)
        has_data.append(bool(p and w.u32(p + w.u32(p))) or (off > 1 and size > 0))
    n_tensors = []
    for s, sg in enumerate(subgraphs):
        tensors = w.items(sg, 0, 0)
        nt = len(tensors)
        n_tensors.append(nt)
        for t, tp in enumerate(tensors):
            if w.get(tp, 2, 4) >= len(buffers):
                raise _Bad(f"tensor {t} of subgraph {s} names buffer {w.get(tp, 2, 4)} of "
                           f"{len(buffers)}")
        for slot, what in ((1, "input"), (2, "output")):
            for t in w.items(sg, slot):
                if not 0 <= t < nt:
                    raise _Bad(f"subgraph {s} {what} tensor {t} of {nt}")
        ops = w.items(sg, 3, 0)
        for o, op in enumerate(ops):
            if w.get(op, 0, 4) >= n_codes:
                raise _Bad(f"operator {o} of subgraph {s} has opcode {w.get(op, 0, 4)} of {n_codes}")
            for slot, what in ((1, "input"), (2, "output"), (8, "intermediate")):
                for t in w.items(op, slot):
                    if not -1 <= t < nt:  # -1: an optional operand left out
                        raise _Bad(f"operator {o} of subgraph {s}: {what} tensor {t} of {nt}")
        _check_dataflow(w, s, sg, ops, tensors, has_data)
    for i, md in enumerate(w.items(root, 6, 0)):
        if w.get(md, 1, 4) >= len(buffers):
            raise _Bad(f"metadata {i} names buffer {w.get(md, 1, 4)} of {len(buffers)}")
    for i, sd in enumerate(w.items(root, 7, 0)):
        s = w.get(sd, 4, 4)
        if s >= len(subgraphs):
            raise _Bad(f"signature {i} names subgraph {s} of {len(subgraphs)}")
        for slot in (0, 1):
            for tm in w.items(sd, slot, 0):
                if w.get(tm, 1, 4) >= n_tensors[s]:
                    raise _Bad(f"signature {i} names tensor {w.get(tm, 1, 4)} of {n_tensors[s]}")


def _check_dataflow(w: _Walker, s: int, sg: int, ops: list[int], tensors: list[int],
                    has_data: list[bool]) -> None:
    """Every tensor an operator reads, and every graph output, is a graph input, written by an
    operator, constant, a variable or empty. A weight whose buffer index was damaged into an
    empty one passes every other check and only fails once the runtime invokes the graph."""
    produced = set(w.items(sg, 1))
    for op in ops:
        produced.update(w.items(op, 2))

    def available(t: int) -> bool:
        tp = tensors[t]
        return (t in produced or has_data[w.get(tp, 2, 4)] or bool(w.get(tp, 5, 1))
                or 0 in w.items(tp, 0))

    for o, op in enumerate(ops):
        for t in w.items(op, 1):
            if t >= 0 and not available(t):
                raise _Bad(f"operator {o} of subgraph {s} reads tensor {t}, which no operator "
                           "writes and which holds no data")
    for t in w.items(sg, 2):
        if not available(t):
            raise _Bad(f"subgraph {s} output tensor {t} is written by no operator")


def verify(data: bytes, path=None) -> None:
    """Raise :class:`ModelFileError` unless ``data`` is a well-formed TFLite flatbuffer.

    After it returns, every table, vector and string the generated schema classes (and
    :func:`edgeeff.tflite.reader.read`) reach lies inside ``data``, every index between them is in range, and every
    tensor an operator reads has a source (graph input, operator output, constant data).
    """
    reason = _not_a_flatbuffer(data)
    if reason is None:
        w = _Walker(data)
        try:
            root = w.offset(0, "root table offset")
            w.table(root, "Model", "Model")
            _check_indices(w, root)
        except _Bad as e:
            reason = str(e)
    if reason is not None:
        raise ModelFileError(path, reason)
