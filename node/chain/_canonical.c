/* Canonical msgpack encoding in C: the native build of kledger.node.chain.canonical.encode.
 *
 * One pass over the value does what the Python build does in two (normalize, then msgpack's
 * packb): the same allowed types, map keys in UTF-8 byte order (= code point order, which is
 * str order), ints in their shortest form, str as msgpack str and bytes as bin, tuples as
 * arrays. Refusals are raised as the DecodeError class handed to `init`, with the same
 * messages and found in the same order as the Python build (depth first, then the type, a
 * map's keys before its values, values in key order), so both builds refuse a value alike;
 * tests/test_native.py checks that they agree byte for byte and refusal for refusal.
 *
 * Why native: encoding is on every path of a tx (the decode of client bytes re-encodes to
 * prove canonical form; every state record, receipt and header is encoded), and in Python it
 * cost ~20 % of a node's CPU per tx outside the signature check (docs/bench.md).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 32

static PyObject *decode_error = NULL; /* kledger.node.errors.DecodeError, set by init() */

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int buffer_reserve(Buffer *b, Py_ssize_t more) {
    if (b->size + more <= b->capacity) return 0;
    Py_ssize_t capacity = b->capacity ? b->capacity : 256;
    while (capacity < b->size + more) {
        if (capacity > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        capacity *= 2;
    }
    char *data = PyMem_Realloc(b->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static int put_bytes(Buffer *b, const void *src, Py_ssize_t n) {
    if (buffer_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->size, src, (size_t)n);
    b->size += n;
    return 0;
}

static int put_byte(Buffer *b, unsigned char c) { return put_bytes(b, &c, 1); }

static int put_head(Buffer *b, unsigned char tag, uint64_t value, int width) {
    unsigned char out[9];
    out[0] = tag;
    for (int i = 0; i < width; i++) out[1 + i] = (unsigned char)(value >> (8 * (width - 1 - i)));
    return put_bytes(b, out, 1 + width);
}

static int refuse(const char *format, ...) {
    va_list args;
    va_start(args, format);
    PyObject *message = PyUnicode_FromFormatV(format, args);
    va_end(args);
    if (message != NULL) {
        PyErr_SetObject(decode_error, message);
        Py_DECREF(message);
    }
    return -1;
}

static int encode_int(Buffer *b, PyObject *value) {
    int overflow = 0;
    long long signed_value = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (signed_value == -1 && PyErr_Occurred()) return -1;
    if (overflow == 0) {
        long long d = signed_value;
        if (d < -(1LL << 5)) {
            if (d < -(1LL << 15)) {
                if (d < -(1LL << 31)) return put_head(b, 0xd3, (uint64_t)d, 8);
                return put_head(b, 0xd2, (uint64_t)(uint32_t)(int32_t)d, 4);
            }
            if (d < -(1LL << 7)) return put_head(b, 0xd1, (uint64_t)(uint16_t)(int16_t)d, 2);
            return put_head(b, 0xd0, (uint64_t)(uint8_t)(int8_t)d, 1);
        }
        if (d < 0) return put_byte(b, (unsigned char)(0xe0 | (d & 0x1f)));
        if (d < (1LL << 7)) return put_byte(b, (unsigned char)d);
        if (d < (1LL << 8)) return put_head(b, 0xcc, (uint64_t)d, 1);
        if (d < (1LL << 16)) return put_head(b, 0xcd, (uint64_t)d, 2);
        if (d < (1LL << 32)) return put_head(b, 0xce, (uint64_t)d, 4);
        return put_head(b, 0xcf, (uint64_t)d, 8);
    }
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(value);
        if (!(u == (unsigned long long)-1 && PyErr_Occurred())) return put_head(b, 0xcf, u, 8);
        PyErr_Clear();
    }
    return refuse("integer %S out of the 64-bit range", value);
}

static int encode_str(Buffer *b, PyObject *value) {
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &n);
    if (utf8 == NULL) return -1; /* UnicodeEncodeError (a lone surrogate), as packb raises */
    int rc;
    if (n <= 31) rc = put_byte(b, (unsigned char)(0xa0 | n));
    else if (n <= 0xff) rc = put_head(b, 0xd9, (uint64_t)n, 1);
    else if (n <= 0xffff) rc = put_head(b, 0xda, (uint64_t)n, 2);
    else if ((uint64_t)n <= 0xffffffffULL) rc = put_head(b, 0xdb, (uint64_t)n, 4);
    else return refuse("str of %zd bytes is too long for msgpack", n);
    return rc < 0 ? -1 : put_bytes(b, utf8, n);
}

static int encode_bin(Buffer *b, PyObject *value) {
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    int rc;
    if (n <= 0xff) rc = put_head(b, 0xc4, (uint64_t)n, 1);
    else if (n <= 0xffff) rc = put_head(b, 0xc5, (uint64_t)n, 2);
    else if ((uint64_t)n <= 0xffffffffULL) rc = put_head(b, 0xc6, (uint64_t)n, 4);
    else return refuse("bytes of %zd bytes is too long for msgpack", n);
    return rc < 0 ? -1 : put_bytes(b, PyBytes_AS_STRING(value), n);
}

static int encode_length(Buffer *b, Py_ssize_t n, unsigned char fix, unsigned char tag16,
                         unsigned char tag32) {
    if (n <= 15) return put_byte(b, (unsigned char)(fix | n));
    if (n <= 0xffff) return put_head(b, tag16, (uint64_t)n, 2);
    return put_head(b, tag32, (uint64_t)n, 4);
}

static int encode_value(Buffer *b, PyObject *value, int depth);

static int encode_map(Buffer *b, PyObject *value, int depth) {
    /* Every key is checked (in the map's own order) before any value is looked at. */
    PyObject *key, *item;
    Py_ssize_t position = 0;
    while (PyDict_Next(value, &position, &key, &item)) {
        if (!PyUnicode_Check(key)) return refuse("map key %R is not a string", key);
    }
    PyObject *keys = PyDict_Keys(value);
    if (keys == NULL) return -1;
    int rc = -1;
    if (PyList_Sort(keys) < 0) goto done;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (encode_length(b, n, 0x80, 0xde, 0xdf) < 0) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        PyObject *v = PyDict_GetItemWithError(value, k); /* borrowed */
        if (v == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, k);
            goto done;
        }
        if (encode_str(b, k) < 0 || encode_value(b, v, depth + 1) < 0) goto done;
    }
    rc = 0;
done:
    Py_DECREF(keys);
    return rc;
}

static int encode_array(Buffer *b, PyObject *value, int depth) {
    PyObject *fast = PySequence_Fast(value, "not a sequence");
    if (fast == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    int rc = encode_length(b, n, 0x90, 0xdc, 0xdd);
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        rc = encode_value(b, PySequence_Fast_GET_ITEM(fast, i), depth + 1);
    }
    Py_DECREF(fast);
    return rc;
}

static int encode_value(Buffer *b, PyObject *value, int depth) {
    if (depth > MAX_DEPTH) return refuse("nesting deeper than %d", MAX_DEPTH);
    if (value == Py_None) return put_byte(b, 0xc0);
    if (PyBool_Check(value)) return put_byte(b, value == Py_True ? 0xc3 : 0xc2);
    if (PyUnicode_Check(value)) return encode_str(b, value);
    if (PyBytes_Check(value)) return encode_bin(b, value);
    if (PyLong_Check(value)) return encode_int(b, value);
    if (PyList_Check(value) || PyTuple_Check(value)) {
        if (Py_EnterRecursiveCall(" in canonical encode")) return -1;
        int rc = encode_array(b, value, depth);
        Py_LeaveRecursiveCall();
        return rc;
    }
    if (PyDict_Check(value)) {
        if (Py_EnterRecursiveCall(" in canonical encode")) return -1;
        int rc = encode_map(b, value, depth);
        Py_LeaveRecursiveCall();
        return rc;
    }
    PyObject *name = PyType_GetName(Py_TYPE(value));
    if (name == NULL) return -1;
    refuse("type %U has no canonical encoding", name);
    Py_DECREF(name);
    return -1;
}

static PyObject *canonical_encode(PyObject *self, PyObject *value) {
    if (decode_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "call init(DecodeError) first");
        return NULL;
    }
    Buffer b = {NULL, 0, 0};
    PyObject *out = NULL;
    if (encode_value(&b, value, 0) == 0) out = PyBytes_FromStringAndSize(b.data, b.size);
    PyMem_Free(b.data);
    return out;
}

static PyObject *canonical_init(PyObject *self, PyObject *error_class) {
    if (!PyType_Check(error_class) ||
        !PyType_IsSubtype((PyTypeObject *)error_class, (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "init takes the DecodeError class");
        return NULL;
    }
    Py_XSETREF(decode_error, Py_NewRef(error_class));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"encode", canonical_encode, METH_O, "The canonical msgpack bytes of a value."},
    {"init", canonical_init, METH_O, "Set the exception class refusals are raised as."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_canonical_native", "Canonical msgpack encoding (native build).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__canonical_native(void) { return PyModule_Create(&module); }
