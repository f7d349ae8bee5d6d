/* The state tree's per-page work in C: the native build of the page functions in
 * kledger.node.storage.state_tree (page_masks, page_slot, page_write, leaf_hashes), for
 * 16-ary pages (the store's format; other widths, used only by tests and the layout bench,
 * run the pure build).
 *
 * A page record (state_tree.py's docstring): the 2-byte masks of its filled and of its leaf
 * slots (big-endian, bit j = slot j), each filled slot in slot order (a leaf: version 8 BE,
 * hash 32, key path 32, value hash 32; a child page: version 8, hash 32), then the hash of each
 * inner node below the page's root in heap order (node 1 = the root, children of i are 2i and
 * 2i+1, slot j = node 16 + j). A node is empty (no filled slot below), one lifted leaf (exactly
 * one filled slot below and it is a leaf: smt's compact rule, its hash is the leaf's) or inner
 * (H(0x01 || left || right)); only inner nodes below the root have bytes of their own.
 *
 * Rules kept here:
 * - The same bytes and the same hashes as the pure build (smt.py's rules, byte for byte):
 *   tests/test_native.py checks both on random pages and changes.
 * - Every offset is checked against the record's length before it is read: a damaged record
 *   is refused with the AssertionError, and the message, the pure build raises (never a read
 *   out of bounds). Arguments of the wrong type or size raise TypeError/ValueError.
 * - SHA-256 is the small portable implementation below (FIPS 180-4), not libcrypto: OpenSSL's
 *   headers are not certain on a machine with only python3-dev, and a call into hashlib through
 *   the C API costs more than hashing the two blocks of a node here (docs/bench.md
 *   "Native state pages").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WIDTH 16
#define MASK_BYTES 2
#define HEADER_BYTES (2 * MASK_BYTES)
#define HASH_BYTES 32
#define LEAF_SLOT_BYTES (8 + 3 * HASH_BYTES) /* version, hash, key path, value hash */
#define PAGE_SLOT_BYTES (8 + HASH_BYTES)     /* version, hash */
#define KIND_EMPTY 0
#define KIND_LEAF 1
#define KIND_PAGE 2
#define NODE_EMPTY (-2)
#define NODE_INNER (-1)

/* ---- SHA-256 (FIPS 180-4), one message at a time ---------------------------------------- */

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t state[8], const unsigned char *block) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
               (uint32_t)block[4 * i + 2] << 8 | (uint32_t)block[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROTR(w[i - 15], 7) ^ ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROTR(w[i - 2], 17) ^ ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] +
                      w[i];
        uint32_t t2 = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}


/* With the x86 SHA extensions (most x86-64 CPUs since 2016-2019; checked at run time), a block
 * costs ~5x less: the rounds are the CPU's sha256rnds2, the schedule its sha256msg1/msg2
 * (Intel's published use of them, state kept as ABEF/CDGH). Elsewhere, sha256_block above. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI 1

__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_block_ni(uint32_t state[8],
                                                                        const unsigned char *block) {
    const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i cdab = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[0]), 0xB1);
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[4]), 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    const __m128i abef_before = abef, cdgh_before = cdgh;
    __m128i w[4]; /* w[g % 4]: the schedule's words 4g .. 4g+3 */
    for (int i = 0; i < 4; i++)
        w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * i)), byte_swap);
    for (int g = 0; g < 16; g++) {
        __m128i words = _mm_add_epi32(w[g & 3], _mm_loadu_si128((const __m128i *)&K[4 * g]));
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, words);
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(words, 0x0E));
        if (g < 12) { /* words 4(g+4) .. from W[t-16], W[t-15] (msg1), W[t-7], W[t-2] (msg2) */
            __m128i next = _mm_sha256msg1_epu32(w[g & 3], w[(g + 1) & 3]);
            next = _mm_add_epi32(next, _mm_alignr_epi8(w[(g + 3) & 3], w[(g + 2) & 3], 4));
            w[g & 3] = _mm_sha256msg2_epu32(next, w[(g + 3) & 3]);
        }
    }
    abef = _mm_add_epi32(abef, abef_before);
    cdgh = _mm_add_epi32(cdgh, cdgh_before);
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(dchg, feba, 8));
}

static int cpu_has_sha_ni(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1) || !(c & bit_SSSE3)) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (b >> 29) & 1; /* CPUID.(EAX=7,ECX=0):EBX.SHA */
}
#endif

/* The block function this CPU runs (set once at import). */
static void (*block_function)(uint32_t state[8], const unsigned char *block) = sha256_block;

static void sha256(const unsigned char *data, size_t size, unsigned char out[HASH_BYTES]) {
    uint32_t state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t done = 0;
    for (; size - done >= 64; done += 64) block_function(state, data + done);
    /* the tail, the 0x80 byte, zeros and the bit length: one block or two */
    unsigned char tail[128] = {0};
    size_t rest = size - done;
    memcpy(tail, data + done, rest);
    tail[rest] = 0x80;
    size_t blocks = rest < 56 ? 1 : 2;
    uint64_t bits = (uint64_t)size * 8;
    for (int i = 0; i < 8; i++) tail[blocks * 64 - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t i = 0; i < blocks; i++) block_function(state, tail + 64 * i);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(state[i] >> 24);
        out[4 * i + 1] = (unsigned char)(state[i] >> 16);
        out[4 * i + 2] = (unsigned char)(state[i] >> 8);
        out[4 * i + 3] = (unsigned char)state[i];
    }
}

/* smt.node_hash: H(0x01 || left || right) */
static void node_hash(const unsigned char *left, const unsigned char *right,
                      unsigned char out[HASH_BYTES]) {
    unsigned char message[1 + 2 * HASH_BYTES];
    message[0] = 0x01;
    memcpy(message + 1, left, HASH_BYTES);
    memcpy(message + 1 + HASH_BYTES, right, HASH_BYTES);
    sha256(message, sizeof message, out);
}

/* ---- a page's layout from its masks ----------------------------------------------------- */

typedef struct {
    int filled, leaves;
    int kinds[WIDTH];           /* nodes 1..15: NODE_EMPTY, NODE_INNER or the lifted leaf's slot */
    Py_ssize_t slot_at[WIDTH];  /* each filled slot's bytes (-1: empty) */
    Py_ssize_t node_at[2 * WIDTH]; /* each node's hash in the record (-1: none; node 1: none) */
    Py_ssize_t size;            /* the record's length */
} Layout;

/* The slots below node i (1 <= i < 32) of a 16-slot heap. */
static int slots_below(int node) {
    int level = 0;
    while ((node >> (level + 1)) != 0) level++;
    int span = WIDTH >> level;
    return ((1 << span) - 1) << ((node - (1 << level)) * span);
}

static int lone_leaf(int below, int leaves) {
    if ((below & (below - 1)) == 0 && (below & leaves)) {
        int slot = 0;
        while (!(below >> slot & 1)) slot++;
        return slot;
    }
    return -1;
}

static void layout_of(int filled, int leaves, Layout *layout) {
    layout->filled = filled;
    layout->leaves = leaves;
    Py_ssize_t at = HEADER_BYTES;
    for (int i = 0; i < 2 * WIDTH; i++) layout->node_at[i] = -1;
    for (int slot = 0; slot < WIDTH; slot++) {
        layout->slot_at[slot] = -1;
        if (filled >> slot & 1) {
            layout->slot_at[slot] = at;
            layout->node_at[WIDTH + slot] = at + 8; /* after the version */
            at += (leaves >> slot & 1) ? LEAF_SLOT_BYTES : PAGE_SLOT_BYTES;
        }
    }
    layout->kinds[0] = NODE_EMPTY;
    for (int node = 1; node < WIDTH; node++) {
        int below = filled & slots_below(node);
        int lone = below ? lone_leaf(below, leaves) : -1;
        layout->kinds[node] = !below ? NODE_EMPTY : lone >= 0 ? lone : NODE_INNER;
    }
    for (int node = 2; node < WIDTH; node++) {
        int kind = layout->kinds[node];
        if (kind == NODE_INNER) {
            layout->node_at[node] = at;
            at += HASH_BYTES;
        } else if (kind >= 0) {
            layout->node_at[node] = layout->slot_at[kind] + 8; /* the lone leaf lifted here */
        }
    }
    layout->size = at;
}

static const char MASKS_RULE[] = "a page's leaf slots are filled slots";
static const char SIZE_RULE[] = "a page record holds its masks, slots and inner hashes, no more";

/* Check masks against each other and a record's length, as the pure build's asserts do. */
static int check_page(int filled, int leaves, Py_ssize_t size, Layout *layout) {
    if (filled < 0 || filled >= (1 << WIDTH) || leaves < 0 || leaves >= (1 << WIDTH)) {
        PyErr_SetString(PyExc_ValueError, "page masks must be 16-bit");
        return -1;
    }
    if (leaves & ~filled) {
        PyErr_SetString(PyExc_AssertionError, MASKS_RULE);
        return -1;
    }
    layout_of(filled, leaves, layout);
    if (layout->size != size) {
        PyErr_SetString(PyExc_AssertionError, SIZE_RULE);
        return -1;
    }
    return 0;
}

/* The masks of a record as the pure build parses them (int.from_bytes of what is there). */
static void read_masks(const unsigned char *record, Py_ssize_t size, int *filled, int *leaves) {
    *filled = *leaves = 0;
    for (Py_ssize_t i = 0; i < MASK_BYTES && i < size; i++) *filled = *filled << 8 | record[i];
    for (Py_ssize_t i = MASK_BYTES; i < HEADER_BYTES && i < size; i++)
        *leaves = *leaves << 8 | record[i];
}

/* ---- references (state_tree.Ref: kind, hash, version, key path, value hash) ------------- */

static uint64_t load_u64(const unsigned char *at) {
    uint64_t value = 0;
    for (int i = 0; i < 8; i++) value = value << 8 | at[i];
    return value;
}

static void store_u64(unsigned char *at, uint64_t value) {
    for (int i = 7; i >= 0; i--, value >>= 8) at[i] = (unsigned char)value;
}

static PyObject *empty_bytes = NULL;
static PyObject *empty_ref = NULL; /* (0, 32 zero bytes, 0, b"", b"") */

static PyObject *ref_of_slot(const unsigned char *record, const Layout *layout, int slot) {
    Py_ssize_t at = layout->slot_at[slot];
    if (at < 0) {
        Py_INCREF(empty_ref);
        return empty_ref;
    }
    const unsigned char *bytes = record + at;
    if (layout->leaves >> slot & 1)
        return Py_BuildValue("(iy#Ky#y#)", KIND_LEAF, bytes + 8, (Py_ssize_t)HASH_BYTES,
                             (unsigned long long)load_u64(bytes), bytes + 40,
                             (Py_ssize_t)HASH_BYTES, bytes + 72, (Py_ssize_t)HASH_BYTES);
    return Py_BuildValue("(iy#KOO)", KIND_PAGE, bytes + 8, (Py_ssize_t)HASH_BYTES,
                         (unsigned long long)load_u64(bytes), empty_bytes, empty_bytes);
}

/* One parsed reference from a `changes` value. */
typedef struct {
    int kind;
    uint64_t version;
    const unsigned char *hash, *path, *value_hash; /* borrowed from the tuple's bytes */
} Change;

static const unsigned char *hash_field(PyObject *ref, Py_ssize_t index, const char *name) {
    PyObject *item = PyTuple_GET_ITEM(ref, index);
    if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) != HASH_BYTES) {
        PyErr_Format(PyExc_ValueError, "a reference's %s must be %d bytes", name, HASH_BYTES);
        return NULL;
    }
    return (const unsigned char *)PyBytes_AS_STRING(item);
}

static int parse_change(PyObject *ref, Change *change) {
    if (!PyTuple_Check(ref) || PyTuple_GET_SIZE(ref) != 5) {
        PyErr_SetString(PyExc_TypeError, "a reference is a tuple of 5");
        return -1;
    }
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(ref, 0));
    if (kind == -1 && PyErr_Occurred()) return -1;
    if (kind != KIND_EMPTY && kind != KIND_LEAF && kind != KIND_PAGE) {
        PyErr_Format(PyExc_ValueError, "unknown reference kind %ld", kind);
        return -1;
    }
    change->kind = (int)kind;
    if (kind == KIND_EMPTY) return 0;
    change->version = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(ref, 2));
    if (change->version == (uint64_t)-1 && PyErr_Occurred()) return -1;
    if (!(change->hash = hash_field(ref, 1, "hash"))) return -1;
    if (kind == KIND_LEAF) {
        if (!(change->path = hash_field(ref, 3, "key path"))) return -1;
        if (!(change->value_hash = hash_field(ref, 4, "value hash"))) return -1;
    }
    return 0;
}

/* ---- the module's functions -------------------------------------------------------------- */

static PyObject *page_masks(PyObject *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "a page record is bytes");
        return NULL;
    }
    const unsigned char *record = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t size = PyBytes_GET_SIZE(arg);
    int filled, leaves;
    Layout layout;
    read_masks(record, size, &filled, &leaves);
    if (check_page(filled, leaves, size, &layout) < 0) return NULL;
    return Py_BuildValue("(ii)", filled, leaves);
}

static PyObject *page_slot(PyObject *self, PyObject *args) {
    const unsigned char *record;
    Py_ssize_t size;
    int filled, leaves, slot;
    Layout layout;
    if (!PyArg_ParseTuple(args, "y#iii", &record, &size, &filled, &leaves, &slot)) return NULL;
    if (slot < 0 || slot >= WIDTH) {
        PyErr_SetString(PyExc_IndexError, "slot out of range");
        return NULL;
    }
    if (check_page(filled, leaves, size, &layout) < 0) return NULL;
    return ref_of_slot(record, &layout, slot);
}

/* The hash of node `node` of the page whose record and layout these are (slot nodes too). */
static const unsigned char *stored_hash(const unsigned char *record, const Layout *layout,
                                        int node) {
    static const unsigned char empty[HASH_BYTES] = {0};
    Py_ssize_t at = layout->node_at[node];
    return at < 0 ? empty : record + at;
}

static PyObject *page_write(PyObject *self, PyObject *args) {
    const unsigned char *old;
    Py_ssize_t old_size;
    int old_filled, old_leaves;
    PyObject *changes;
    Layout before, after;
    if (!PyArg_ParseTuple(args, "y#iiO!", &old, &old_size, &old_filled, &old_leaves, &PyDict_Type,
                          &changes))
        return NULL;
    if (check_page(old_filled, old_leaves, old_size, &before) < 0) return NULL;
    if (PyDict_GET_SIZE(changes) == 0) {
        PyErr_SetString(PyExc_AssertionError, "a page is written for a change");
        return NULL;
    }

    Change slots[WIDTH];
    int changed = 0, filled = old_filled, leaves = old_leaves;
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(changes, &position, &key, &value)) {
        long slot = PyLong_AsLong(key);
        if (slot == -1 && PyErr_Occurred()) return NULL;
        if (slot < 0 || slot >= WIDTH) {
            PyErr_SetString(PyExc_IndexError, "slot out of range");
            return NULL;
        }
        if (parse_change(value, &slots[slot]) < 0) return NULL;
        changed |= 1 << slot;
        int kind = slots[slot].kind;
        filled = kind != KIND_EMPTY ? filled | 1 << slot : filled & ~(1 << slot);
        leaves = kind == KIND_LEAF ? leaves | 1 << slot : leaves & ~(1 << slot);
    }
    if (filled == 0 || lone_leaf(filled, leaves) >= 0) {
        PyErr_SetString(PyExc_AssertionError, "a written page holds two or more leaves");
        return NULL;
    }
    layout_of(filled, leaves, &after);

    /* every node's hash in the new page: the changed slots' from their references, the nodes
       above them recomputed bottom-up, all others as they were in the old record (their slots
       did not change, so neither did their kind or hash) */
    unsigned char hashes[2 * WIDTH][HASH_BYTES];
    int dirty = 1 << 1; /* bit i: node i (1..15) is above a changed slot; the root always */
    for (int slot = 0; slot < WIDTH; slot++) {
        int node = WIDTH + slot;
        if (changed >> slot & 1) {
            if (slots[slot].kind == KIND_EMPTY)
                memset(hashes[node], 0, HASH_BYTES);
            else
                memcpy(hashes[node], slots[slot].hash, HASH_BYTES);
            for (int up = node >> 1; up; up >>= 1) dirty |= 1 << up;
        } else {
            memcpy(hashes[node], stored_hash(old, &before, node), HASH_BYTES);
        }
    }
    for (int node = WIDTH - 1; node >= 1; node--) {
        if (!(dirty >> node & 1)) {
            if (node >= 2) memcpy(hashes[node], stored_hash(old, &before, node), HASH_BYTES);
            continue;
        }
        int kind = after.kinds[node];
        if (kind == NODE_INNER)
            node_hash(hashes[2 * node], hashes[2 * node + 1], hashes[node]);
        else if (kind >= 0)
            memcpy(hashes[node], hashes[WIDTH + kind], HASH_BYTES); /* the lifted leaf */
        else
            memset(hashes[node], 0, HASH_BYTES);
    }

    PyObject *out = PyBytes_FromStringAndSize(NULL, after.size);
    if (out == NULL) return NULL;
    unsigned char *record = (unsigned char *)PyBytes_AS_STRING(out);
    record[0] = (unsigned char)(filled >> 8);
    record[1] = (unsigned char)filled;
    record[2] = (unsigned char)(leaves >> 8);
    record[3] = (unsigned char)leaves;
    for (int slot = 0; slot < WIDTH; slot++) {
        Py_ssize_t at = after.slot_at[slot];
        if (at < 0) continue;
        if (!(changed >> slot & 1)) { /* the old slot's bytes, the same kind and length */
            Py_ssize_t length = (leaves >> slot & 1) ? LEAF_SLOT_BYTES : PAGE_SLOT_BYTES;
            memcpy(record + at, old + before.slot_at[slot], (size_t)length);
            continue;
        }
        const Change *change = &slots[slot];
        store_u64(record + at, change->version);
        memcpy(record + at + 8, change->hash, HASH_BYTES);
        if (change->kind == KIND_LEAF) {
            memcpy(record + at + 40, change->path, HASH_BYTES);
            memcpy(record + at + 72, change->value_hash, HASH_BYTES);
        }
    }
    for (int node = 2; node < WIDTH; node++)
        if (after.kinds[node] == NODE_INNER)
            memcpy(record + after.node_at[node], hashes[node], HASH_BYTES);
    PyObject *root = PyBytes_FromStringAndSize((const char *)hashes[1], HASH_BYTES);
    if (root == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(NiiN)", out, filled, leaves, root);
}

static PyObject *leaf_hashes(PyObject *self, PyObject *args) {
    const unsigned char *path, *value;
    Py_ssize_t path_size, value_size;
    if (!PyArg_ParseTuple(args, "y#y#", &path, &path_size, &value, &value_size)) return NULL;
    if (path_size != HASH_BYTES) {
        PyErr_Format(PyExc_ValueError, "a key path is %d bytes", HASH_BYTES);
        return NULL;
    }
    unsigned char message[1 + 2 * HASH_BYTES], leaf[HASH_BYTES];
    message[0] = 0x00; /* smt.leaf_hash_of: H(0x00 || path || H(value)) */
    memcpy(message + 1, path, HASH_BYTES);
    sha256(value, (size_t)value_size, message + 1 + HASH_BYTES);
    sha256(message, sizeof message, leaf);
    return Py_BuildValue("(y#y#)", leaf, (Py_ssize_t)HASH_BYTES, message + 1 + HASH_BYTES,
                         (Py_ssize_t)HASH_BYTES);
}

static PyObject *sha256_digest(PyObject *self, PyObject *arg) {
    Py_buffer data;
    unsigned char out[HASH_BYTES];
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0) return NULL;
    sha256(data.buf, (size_t)data.len, out);
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, HASH_BYTES);
}

static PyObject *sha_extensions(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(block_function != sha256_block);
}

static PyMethodDef methods[] = {
    {"page_masks", page_masks, METH_O, "(filled, leaves) of a 16-ary page record, checked."},
    {"page_slot", page_slot, METH_VARARGS, "The reference in one slot of a page."},
    {"page_write", page_write, METH_VARARGS,
     "(record, filled, leaves, root) of a page with some slots changed."},
    {"leaf_hashes", leaf_hashes, METH_VARARGS, "(leaf hash, value hash) of a key path's value."},
    {"sha256", sha256_digest, METH_O, "SHA-256 of bytes (this module's own, for the tests)."},
    {"sha_extensions", sha_extensions, METH_NOARGS, 
     "Whether SHA-256 runs on the x86 SHA extensions."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_state_tree_native", "State tree pages (native build).", -1, methods,
};

PyMODINIT_FUNC PyInit__state_tree_native(void) {
#ifdef HAVE_SHA_NI
    if (cpu_has_sha_ni() && getenv("KLEDGER_PORTABLE_SHA256") == NULL)
        block_function = sha256_block_ni;
#endif
    empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *zero_hash = PyBytes_FromStringAndSize(NULL, HASH_BYTES);
    if (empty_bytes == NULL || zero_hash == NULL) return NULL;
    memset(PyBytes_AS_STRING(zero_hash), 0, HASH_BYTES);
    empty_ref = Py_BuildValue("(iNiOO)", KIND_EMPTY, zero_hash, 0, empty_bytes, empty_bytes);
    if (empty_ref == NULL) return NULL;
    return PyModule_Create(&module);
}
