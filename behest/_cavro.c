/* behest._cavro: the compiled Avro codec, an interpreter over a schema "program".
 *
 * behest.avro_program turns a parsed Avro schema, once, into nested tuples (one per
 * schema node); `Program(spec, ...)` turns those into a C tree, and its methods read and
 * write values by walking that tree. The objects returned and the bytes written are
 * exactly those of the generated Python (behest.avro_reader, behest.avro_writer), and so
 * are the errors: truncation raises IndexError and bad UTF-8 UnicodeDecodeError (the
 * callers translate both), everything else CodecError with the generated code's message.
 * Every read is bounds-checked: corrupt input raises, it never crashes or over-allocates.
 *
 * Spec of a node: (kind, path, check, lo, hi, names, children, expected, access)
 *   kind      one of the K_* below
 *   path      "Record.field", for messages
 *   check     C_NONE, C_RANGE (lo <= long <= hi), C_UUID (canonical text), C_JSON
 *             (json_fits(text) is true): the fused decode_checked's fast checks; a value
 *             that fails one makes it run the Python checker on the whole record
 *   names     record: field names; enum: symbols; union: record full name or None
 *   children  record: field nodes; union: branch nodes
 *   expected  union, enum: the "must be ..." text of a value of no branch/symbol
 *   access    None: records are dicts, unions of records (name, fields) tuples. Else the
 *             writer takes objects (encode_object): record: per field None (the attribute
 *             of that name), a callable (applied to that attribute) or an int (that extra
 *             argument of encode_object); union: {class: branch index}
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <string.h>

#define CAVRO_VERSION 4 /* behest.avro_program refuses a module of another version */

enum { K_NULL, K_BOOLEAN, K_INT, K_LONG, K_FLOAT, K_DOUBLE, K_BYTES, K_STRING, K_ENUM,
       K_RECORD, K_UNION, K_KINDS };
enum { C_NONE, C_RANGE, C_UUID, C_JSON };

typedef struct Node {
    int kind;
    int check;
    long long lo, hi;
    PyObject *path;     /* str */
    PyObject *names;    /* tuple or NULL */
    PyObject *expected; /* str or NULL */
    PyObject *index;    /* dict: enum symbol or union record name -> index, or NULL */
    PyObject *access;   /* object mode: record field sources (tuple), union classes (dict) */
    Py_ssize_t n;       /* children */
    struct Node **children;
    int null_branch, other_branch, has_records;
} Node;

typedef struct {
    PyObject_HEAD
    Node *root;
    PyObject *error;       /* behest.errors.CodecError */
    PyObject *json_fits;   /* callable(text) -> bool, or None */
    PyObject *slow_check;  /* callable(record) -> None, raises CodecError, or None */
    PyObject *uuid_text;   /* a field source whose work C does for a uuid.UUID, or None */
    PyObject *header;      /* bytes before the value in decode_event's data, or None */
} Program;

/* Set once, at import. */
static PyObject *struct_error; /* struct.error: what struct.pack raises, for the same errors */
static PyObject *uuid_type;    /* uuid.UUID */
static PyObject *int_name;     /* "int" */
static PyObject *sixty_four;   /* 64 */

/* ---------------------------------------------------------------- building the tree */

static void node_free(Node *node) {
    if (node == NULL) return;
    for (Py_ssize_t i = 0; i < node->n; i++) node_free(node->children[i]);
    PyMem_Free(node->children);
    Py_XDECREF(node->path);
    Py_XDECREF(node->names);
    Py_XDECREF(node->expected);
    Py_XDECREF(node->index);
    Py_XDECREF(node->access);
    PyMem_Free(node);
}

static Node *node_build(PyObject *spec, int depth) {
    if (depth > 200) {
        PyErr_SetString(PyExc_ValueError, "schema program nests too deep");
        return NULL;
    }
    int kind, check;
    long long lo, hi;
    PyObject *path, *names, *children, *expected, *access;
    if (!PyTuple_Check(spec) ||
        !PyArg_ParseTuple(spec, "iUiLLOOOO", &kind, &path, &check, &lo, &hi, &names, &children,
                          &expected, &access))
        return NULL;
    if (kind < 0 || kind >= K_KINDS || check < C_NONE || check > C_JSON) {
        PyErr_Format(PyExc_ValueError, "bad schema program node kind %d check %d", kind, check);
        return NULL;
    }
    Node *node = PyMem_Calloc(1, sizeof(Node));
    if (node == NULL) return (Node *)PyErr_NoMemory();
    node->kind = kind;
    node->check = check;
    node->lo = lo;
    node->hi = hi;
    node->null_branch = node->other_branch = -1;
    node->path = Py_NewRef(path);
    if (names != Py_None) {
        if (!PyTuple_Check(names)) goto bad;
        node->names = Py_NewRef(names);
    }
    if (expected != Py_None) {
        if (!PyUnicode_Check(expected)) goto bad;
        node->expected = Py_NewRef(expected);
    }
    if (access != Py_None) {
        if (kind == K_RECORD ? !PyTuple_Check(access) || names == Py_None ||
                                   PyTuple_GET_SIZE(access) != PyTuple_GET_SIZE(names)
                             : kind != K_UNION || !PyDict_Check(access))
            goto bad;
        node->access = Py_NewRef(access);
    }
    if (kind == K_RECORD || kind == K_UNION) {
        if (!PyTuple_Check(children) || node->names == NULL ||
            PyTuple_GET_SIZE(children) != PyTuple_GET_SIZE(node->names) ||
            (kind == K_UNION && PyTuple_GET_SIZE(children) == 0))
            goto bad;
        Py_ssize_t n = PyTuple_GET_SIZE(children);
        node->children = PyMem_Calloc((size_t)n + 1, sizeof(Node *));
        if (node->children == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        node->n = n;
        for (Py_ssize_t i = 0; i < n; i++) {
            node->children[i] = node_build(PyTuple_GET_ITEM(children, i), depth + 1);
            if (node->children[i] == NULL) goto fail;
            if (kind == K_RECORD && !PyUnicode_Check(PyTuple_GET_ITEM(node->names, i))) goto bad;
        }
    }
    if (kind == K_ENUM || kind == K_UNION) {
        if (node->names == NULL || node->expected == NULL) goto bad;
        node->index = PyDict_New();
        if (node->index == NULL) goto fail;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(node->names); i++) {
            PyObject *name = PyTuple_GET_ITEM(node->names, i);
            if (kind == K_UNION) {
                int child = node->children[i]->kind;
                if (child == K_RECORD) {
                    if (!PyUnicode_Check(name)) goto bad;
                    node->has_records = 1;
                } else if (child == K_NULL) {
                    if (node->null_branch < 0) node->null_branch = (int)i;
                    continue;
                } else {
                    if (node->other_branch < 0) node->other_branch = (int)i;
                    continue;
                }
            }
            PyObject *number = PyLong_FromSsize_t(i);
            if (number == NULL) goto fail;
            int failed = PyDict_SetItem(node->index, name, number);
            Py_DECREF(number);
            if (failed) goto fail;
        }
    }
    return node;
bad:
    PyErr_Format(PyExc_ValueError, "malformed schema program node %R", spec);
fail:
    node_free(node);
    return NULL;
}

/* ---------------------------------------------------------------------------- reading */

typedef struct {
    const unsigned char *buf;
    Py_ssize_t size, pos;
    Program *program;
    int checked; /* run the fast checks */
    int doubt;   /* a fast check failed: the Python checker decides */
} Reader;

static int truncated(Reader *r, Node *node) {
    PyErr_SetObject(PyExc_IndexError, node->path);
    (void)r;
    return -1;
}

/* A zigzag varint as its raw unsigned form; the errors of avro_reader._read_long_tail. */
static int read_varint(Reader *r, Node *node, uint64_t *out) {
    const unsigned char *b = r->buf;
    Py_ssize_t p = r->pos;
    uint64_t value = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= r->size) return truncated(r, node);
        unsigned int c = b[p++];
        if (c < 0x80) {
            if (i == 9 && c > 1) {
                PyErr_Format(r->program->error,
                             "corrupt event: the varint ending at byte %zd exceeds 64 bits", p);
                return -1;
            }
            *out = value | ((uint64_t)c << (7 * i));
            r->pos = p;
            return 0;
        }
        value |= (uint64_t)(c & 0x7F) << (7 * i);
    }
    PyErr_Format(r->program->error,
                 "corrupt event: the varint ending at byte %zd is longer than 10 bytes", p);
    return -1;
}

static inline long long unzigzag(uint64_t z) {
    return (long long)(z >> 1) ^ -(long long)(z & 1);
}

static inline int read_long(Reader *r, Node *node, long long *out) {
    if (r->pos < r->size && r->buf[r->pos] < 0x80) {
        *out = unzigzag(r->buf[r->pos++]);
        return 0;
    }
    uint64_t z;
    if (read_varint(r, node, &z) < 0) return -1;
    *out = unzigzag(z);
    return 0;
}

/* A union or enum index: its position, or CodecError if the schema has no such choice. */
static int read_index(Reader *r, Node *node, Py_ssize_t count, Py_ssize_t *out) {
    uint64_t z;
    if (r->pos < r->size && r->buf[r->pos] < 0x80) {
        z = r->buf[r->pos++];
    } else if (read_varint(r, node, &z) < 0) {
        return -1;
    }
    if ((z & 1) || z >= 2 * (uint64_t)count) {
        PyErr_Format(r->program->error,
                     "corrupt event: %U has index %lld, but the schema has only %zd choices "
                     "(0 to %zd)",
                     node->path, unzigzag(z), count, count - 1);
        return -1;
    }
    *out = (Py_ssize_t)(z >> 1);
    return 0;
}

static int canonical_uuid(const unsigned char *s, Py_ssize_t n) {
    if (n != 36) return 0;
    for (int i = 0; i < 36; i++) {
        unsigned char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

static PyObject *read_node(Reader *r, Node *node);

static PyObject *read_record(Reader *r, Node *node) {
    PyObject *dict = PyDict_New();
    if (dict == NULL) return NULL;
    for (Py_ssize_t i = 0; i < node->n; i++) {
        PyObject *value = read_node(r, node->children[i]);
        if (value == NULL) goto fail;
        int failed = PyDict_SetItem(dict, PyTuple_GET_ITEM(node->names, i), value);
        Py_DECREF(value);
        if (failed) goto fail;
    }
    return dict;
fail:
    Py_DECREF(dict);
    return NULL;
}

static PyObject *read_text(Reader *r, Node *node) {
    if (r->pos >= r->size) {
        truncated(r, node);
        return NULL;
    }
    unsigned int b = r->buf[r->pos];
    long long n;
    if (!(b & 129)) {
        n = b >> 1;
        r->pos++;
    } else if (read_long(r, node, &n) < 0) {
        return NULL;
    }
    if (n < 0 || n > r->size - r->pos) {
        PyErr_Format(r->program->error,
                     "corrupt or truncated event: %U declares %lld bytes at byte %zd, but only "
                     "%zd remain",
                     node->path, n, r->pos, r->size - r->pos);
        return NULL;
    }
    const unsigned char *start = r->buf + r->pos;
    r->pos += (Py_ssize_t)n;
    if (node->kind == K_BYTES) return PyBytes_FromStringAndSize((const char *)start, n);
    PyObject *text = PyUnicode_DecodeUTF8((const char *)start, n, NULL);
    if (text == NULL || !r->checked) return text;
    if (node->check == C_UUID) {
        if (!canonical_uuid(start, n)) r->doubt = 1;
    } else if (node->check == C_JSON && r->program->json_fits != Py_None) {
        PyObject *fits = PyObject_CallOneArg(r->program->json_fits, text);
        if (fits == NULL) {
            Py_DECREF(text);
            return NULL;
        }
        if (fits != Py_True) r->doubt = 1;
        Py_DECREF(fits);
    }
    return text;
}

static PyObject *read_node(Reader *r, Node *node) {
    switch (node->kind) {
    case K_NULL:
        Py_RETURN_NONE;
    case K_BOOLEAN: {
        if (r->pos >= r->size) {
            truncated(r, node);
            return NULL;
        }
        unsigned int b = r->buf[r->pos++];
        if (b > 1) {
            PyErr_Format(r->program->error, "corrupt event: %U is a boolean but its byte is %u",
                         node->path, b);
            return NULL;
        }
        return Py_NewRef(b ? Py_True : Py_False);
    }
    case K_INT:
    case K_LONG: {
        long long value;
        if (read_long(r, node, &value) < 0) return NULL;
        if (r->checked && node->check == C_RANGE && (value < node->lo || value > node->hi))
            r->doubt = 1;
        return PyLong_FromLongLong(value);
    }
    case K_FLOAT:
    case K_DOUBLE: {
        Py_ssize_t width = node->kind == K_FLOAT ? 4 : 8;
        if (r->size - r->pos < width) {
            truncated(r, node);
            return NULL;
        }
        const unsigned char *p = r->buf + r->pos;
        r->pos += width;
        double value = width == 4 ? PyFloat_Unpack4((const char *)p, 1)
                                  : PyFloat_Unpack8((const char *)p, 1);
        if (value == -1.0 && PyErr_Occurred()) return NULL;
        return PyFloat_FromDouble(value);
    }
    case K_BYTES:
    case K_STRING:
        return read_text(r, node);
    case K_ENUM: {
        Py_ssize_t i;
        if (read_index(r, node, PyTuple_GET_SIZE(node->names), &i) < 0) return NULL;
        return Py_NewRef(PyTuple_GET_ITEM(node->names, i));
    }
    case K_RECORD:
        return read_record(r, node);
    case K_UNION: {
        Py_ssize_t i;
        if (read_index(r, node, node->n, &i) < 0) return NULL;
        Node *branch = node->children[i];
        PyObject *value = read_node(r, branch);
        if (value == NULL || branch->kind != K_RECORD) return value;
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(value);
            return NULL;
        }
        PyTuple_SET_ITEM(pair, 0, Py_NewRef(PyTuple_GET_ITEM(node->names, i)));
        PyTuple_SET_ITEM(pair, 1, value);
        return pair;
    }
    }
    PyErr_SetString(PyExc_SystemError, "unknown schema program node");
    return NULL;
}

/* The buffer and start of a read: (data, pos). */
static int reader_open(Program *self, PyObject *const *args, Py_ssize_t nargs, Py_buffer *view,
                       Reader *r, const char *name) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes (data, pos)", name);
        return -1;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) return -1;
    if (PyBytes_CheckExact(args[0])) { /* the common case: no buffer to take and release */
        view->obj = NULL;
        view->buf = PyBytes_AS_STRING(args[0]);
        view->len = PyBytes_GET_SIZE(args[0]);
    } else if (PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (pos < 0 || pos > view->len) {
        if (view->obj != NULL) PyBuffer_Release(view);
        PyErr_Format(PyExc_IndexError, "%s(): position %zd outside the data", name, pos);
        return -1;
    }
    r->buf = view->buf;
    r->size = view->len;
    r->pos = pos;
    r->program = self;
    r->checked = 0;
    r->doubt = 0;
    return 0;
}

/* The value from `pos` to the end of the data: CodecError if bytes are left over. */
static PyObject *decode_span(Program *self, Reader *r, int checked) {
    r->checked = checked;
    PyObject *value = read_node(r, self->root);
    Py_ssize_t extra = r->size - r->pos;
    if (value == NULL) return NULL;
    if (extra != 0) {
        Py_DECREF(value);
        PyErr_Format(self->error, "corrupt event: %zd bytes left over after the record", extra);
        return NULL;
    }
    if (r->doubt && self->slow_check != Py_None) {
        PyObject *result = PyObject_CallOneArg(self->slow_check, value);
        if (result == NULL) {
            Py_DECREF(value);
            return NULL;
        }
        Py_DECREF(result);
    }
    return value;
}

static PyObject *decode_to_end(Program *self, PyObject *const *args, Py_ssize_t nargs,
                               int checked, const char *name) {
    Py_buffer view;
    Reader r;
    if (reader_open(self, args, nargs, &view, &r, name) < 0) return NULL;
    PyObject *value = decode_span(self, &r, checked);
    if (view.obj != NULL) PyBuffer_Release(&view);
    return value;
}

/* decode_event(data, other): the value after the header, with the errors behest.codec
 * gives (truncation and bad UTF-8 as CodecError); other(data) decodes anything that is not
 * bytes starting with the header (another writer schema, a bytearray, garbage). */
static PyObject *decode_event(Program *self, PyObject *const *args, Py_ssize_t nargs,
                              int checked) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "decode_event() takes (data, other)");
        return NULL;
    }
    PyObject *data = args[0];
    Py_ssize_t head = self->header == NULL ? 0 : PyBytes_GET_SIZE(self->header);
    if (self->header == NULL || !PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) < head ||
        memcmp(PyBytes_AS_STRING(data), PyBytes_AS_STRING(self->header), (size_t)head) != 0)
        return PyObject_CallOneArg(args[1], data);
    Reader r = {(const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), head,
                self, 0, 0};
    PyObject *value = decode_span(self, &r, checked);
    if (value != NULL) return value;
    if (PyErr_ExceptionMatches(PyExc_IndexError)) {
        PyErr_Clear();
        PyErr_Format(self->error, "truncated event: the data ends after %zd bytes, inside the "
                     "record", r.size);
    } else if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyObject *type, *error, *traceback;
        PyErr_Fetch(&type, &error, &traceback);
        PyErr_NormalizeException(&type, &error, &traceback);
        PyObject *reason = error == NULL ? NULL : PyUnicodeDecodeError_GetReason(error);
        Py_XDECREF(type);
        Py_XDECREF(error);
        Py_XDECREF(traceback);
        if (reason != NULL) {
            PyErr_Format(self->error, "corrupt event: a string is not valid UTF-8 (%U)", reason);
            Py_DECREF(reason);
        }
    }
    return NULL;
}

static PyObject *Program_decode_event(Program *self, PyObject *const *args, Py_ssize_t n) {
    return decode_event(self, args, n, 0);
}

static PyObject *Program_decode_event_checked(Program *self, PyObject *const *args,
                                              Py_ssize_t n) {
    return decode_event(self, args, n, 1);
}

static PyObject *Program_decode(Program *self, PyObject *const *args, Py_ssize_t nargs) {
    return decode_to_end(self, args, nargs, 0, "decode");
}

static PyObject *Program_decode_checked(Program *self, PyObject *const *args, Py_ssize_t nargs) {
    return decode_to_end(self, args, nargs, 1, "decode_checked");
}

static PyObject *Program_read(Program *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer view;
    Reader r;
    if (reader_open(self, args, nargs, &view, &r, "read") < 0) return NULL;
    PyObject *value = read_node(&r, self->root);
    Py_ssize_t end = r.pos;
    if (view.obj != NULL) PyBuffer_Release(&view);
    if (value == NULL) return NULL;
    return Py_BuildValue("(Nn)", value, end);
}

/* ---------------------------------------------------------------------------- writing */

typedef struct {
    unsigned char *data;
    Py_ssize_t len, cap;
    unsigned char local[512];
    Program *program;
    PyObject *const *params; /* encode_object's extra arguments */
    Py_ssize_t nparams;
} Writer;

static int grow(Writer *w, Py_ssize_t more) {
    if (more > PY_SSIZE_T_MAX / 2 - w->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t cap = w->cap * 2;
    if (cap < w->len + more) cap = w->len + more;
    unsigned char *data;
    if (w->data == w->local) {
        data = PyMem_Malloc((size_t)cap);
        if (data != NULL) memcpy(data, w->local, (size_t)w->len);
    } else {
        data = PyMem_Realloc(w->data, (size_t)cap);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->data = data;
    w->cap = cap;
    return 0;
}

static inline int put(Writer *w, const void *bytes, Py_ssize_t n) {
    if (w->cap - w->len < n && grow(w, n) < 0) return -1;
    memcpy(w->data + w->len, bytes, (size_t)n);
    w->len += n;
    return 0;
}

static inline int put_varint(Writer *w, uint64_t z) {
    unsigned char tmp[10];
    int n = 0;
    while (z > 0x7F) {
        tmp[n++] = (unsigned char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    tmp[n++] = (unsigned char)z;
    return put(w, tmp, n);
}

static int not_a(Writer *w, const char *expected, PyObject *expected_text, PyObject *value,
                 PyObject *path) {
    PyObject *repr = PyObject_Repr(value);
    if (repr == NULL) return -1;
    if (PyUnicode_GET_LENGTH(repr) > 80) {
        PyObject *cut = PyUnicode_Substring(repr, 0, 80);
        Py_DECREF(repr);
        if (cut == NULL) return -1;
        repr = cut;
    }
    PyObject *type_name = PyType_GetName(Py_TYPE(value));
    if (type_name == NULL) {
        Py_DECREF(repr);
        return -1;
    }
    if (expected_text != NULL)
        PyErr_Format(w->program->error, "%U must be %U, not %U %U", path, expected_text,
                     type_name, repr);
    else
        PyErr_Format(w->program->error, "%U must be %s, not %U %U", path, expected, type_name,
                     repr);
    Py_DECREF(repr);
    Py_DECREF(type_name);
    return -1;
}

static int write_node(Writer *w, Node *node, PyObject *value);

static int write_integer(Writer *w, Node *node, PyObject *value) {
    PyObject *number = value;
    Py_INCREF(number);
    if (!PyLong_Check(value)) {
        /* the generated code computes `value << 1`: the same error for a non-integer */
        PyObject *one = PyLong_FromLong(1);
        if (one == NULL) goto fail;
        PyObject *shifted = PyNumber_Lshift(value, one);
        Py_DECREF(one);
        if (shifted == NULL) goto fail;
        Py_DECREF(shifted);
        Py_SETREF(number, PyNumber_Index(value));
        if (number == NULL) return -1;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (x == -1 && PyErr_Occurred()) goto fail;
    int bits = node->kind == K_INT ? 32 : 64;
    if (overflow || (bits == 32 && (x < INT32_MIN || x > INT32_MAX))) {
        PyErr_Format(w->program->error, "%U = %S does not fit an Avro %d-bit integer",
                     node->path, value, bits);
        goto fail;
    }
    Py_DECREF(number);
    return put_varint(w, ((uint64_t)x << 1) ^ (uint64_t)(x >> 63));
fail:
    Py_DECREF(number);
    return -1;
}

static int write_text(Writer *w, Node *node, PyObject *value) {
    PyObject *owned = NULL;
    const char *data;
    Py_ssize_t n;
    if (node->kind == K_STRING) {
        if (PyUnicode_CheckExact(value) && PyUnicode_IS_COMPACT_ASCII(value)) {
            data = (const char *)PyUnicode_DATA(value);
            n = PyUnicode_GET_LENGTH(value);
        } else {
            owned = PyUnicode_CheckExact(value) ? PyUnicode_AsUTF8String(value)
                                                : PyObject_CallMethod(value, "encode", NULL);
            if (owned == NULL) return -1;
            if (!PyBytes_Check(owned)) {
                PyErr_Format(PyExc_TypeError, "%U: encode() returned %s, not bytes",
                             node->path, Py_TYPE(owned)->tp_name);
                Py_DECREF(owned);
                return -1;
            }
            data = PyBytes_AS_STRING(owned);
            n = PyBytes_GET_SIZE(owned);
        }
    } else if (PyBytes_Check(value)) {
        data = PyBytes_AS_STRING(value);
        n = PyBytes_GET_SIZE(value);
    } else if (PyByteArray_Check(value)) {
        data = PyByteArray_AS_STRING(value);
        n = PyByteArray_GET_SIZE(value);
    } else {
        return not_a(w, "bytes", NULL, value, node->path);
    }
    int failed = put_varint(w, (uint64_t)n << 1) < 0 || put(w, data, n) < 0;
    Py_XDECREF(owned);
    return failed ? -1 : 0;
}

static int write_float(Writer *w, Node *node, PyObject *value) {
    double x = PyFloat_AsDouble(value);
    if (x == -1.0 && PyErr_Occurred()) {
        PyErr_Clear(); /* as struct.pack says it */
        PyErr_SetString(struct_error, "required argument is not a float");
        return -1;
    }
    unsigned char bytes[8];
    if (node->kind == K_FLOAT) {
        if (PyFloat_Pack4(x, (char *)bytes, 1) < 0) return -1;
        return put(w, bytes, 4);
    }
    if (PyFloat_Pack8(x, (char *)bytes, 1) < 0) return -1;
    return put(w, bytes, 8);
}

/* A field of an object: its attribute, a function of it, or an argument of the call. */
static PyObject *object_field(Writer *w, PyObject *source, PyObject *object, PyObject *name) {
    if (PyLong_CheckExact(source)) {
        Py_ssize_t at = PyLong_AsSsize_t(source);
        if (at < 0 || at >= w->nparams) {
            PyErr_Format(PyExc_TypeError, "the field %U needs argument %zd of encode()", name,
                         at);
            return NULL;
        }
        return Py_NewRef(w->params[at]);
    }
    PyObject *item = PyObject_GetAttr(object, name);
    if (item != NULL && source != Py_None) Py_SETREF(item, PyObject_CallOneArg(source, item));
    return item;
}

/* The attribute `name` of `object` as canonical UUID text, if it is a uuid.UUID: 1 when
written, 0 when it is something else (the field's converter then says what). */
static int write_uuid_attribute(Writer *w, PyObject *object, PyObject *name) {
    PyObject *id = PyObject_GetAttr(object, name);
    if (id == NULL) return -1;
    if (Py_TYPE(id) != (PyTypeObject *)uuid_type) {
        Py_DECREF(id);
        return 0;
    }
    PyObject *number = PyObject_GetAttr(id, int_name);
    Py_DECREF(id);
    if (number == NULL) return -1;
    PyObject *high_part = PyNumber_Rshift(number, sixty_four);
    uint64_t low = PyLong_AsUnsignedLongLongMask(number);
    Py_DECREF(number);
    if (high_part == NULL) return -1;
    uint64_t high = PyLong_AsUnsignedLongLongMask(high_part);
    Py_DECREF(high_part);
    if (PyErr_Occurred()) return -1;
    static const char digits[] = "0123456789abcdef";
    unsigned char text[37];
    text[0] = 72; /* the length, 36, as a zigzag varint */
    int at = 1;
    for (int nibble = 0; nibble < 32; nibble++) {
        if (nibble == 8 || nibble == 12 || nibble == 16 || nibble == 20) text[at++] = '-';
        uint64_t half = nibble < 16 ? high : low;
        text[at++] = (unsigned char)digits[(half >> (60 - 4 * (nibble % 16))) & 0xF];
    }
    return put(w, text, 37) < 0 ? -1 : 1;
}

static int write_record(Writer *w, Node *node, PyObject *value) {
    for (Py_ssize_t i = 0; i < node->n; i++) {
        PyObject *name = PyTuple_GET_ITEM(node->names, i);
        PyObject *item;
        if (node->access != NULL) {
            PyObject *source = PyTuple_GET_ITEM(node->access, i);
            if (source == w->program->uuid_text && source != Py_None &&
                node->children[i]->kind == K_STRING) {
                int done = write_uuid_attribute(w, value, name);
                if (done < 0) return -1;
                if (done) continue;
            }
            item = object_field(w, source, value, name);
            if (item == NULL) return -1;
        } else if (PyDict_CheckExact(value)) {
            item = PyDict_GetItemWithError(value, name);
            if (item == NULL) {
                if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, name);
                return -1;
            }
            Py_INCREF(item);
        } else {
            item = PyObject_GetItem(value, name);
            if (item == NULL) return -1;
        }
        int failed = write_node(w, node->children[i], item);
        Py_DECREF(item);
        if (failed) return -1;
    }
    return 0;
}

static int write_union(Writer *w, Node *node, PyObject *value) {
    if (node->access != NULL) { /* objects: the branch is the object's class */
        PyObject *index = PyDict_GetItemWithError(node->access, (PyObject *)Py_TYPE(value));
        if (index != NULL) {
            Py_ssize_t i = PyLong_AsSsize_t(index);
            if (i < 0 || i >= node->n) {
                PyErr_Format(PyExc_ValueError, "%U: no branch %zd", node->path, i);
                return -1;
            }
            if (put_varint(w, (uint64_t)i << 1) < 0) return -1;
            return write_node(w, node->children[i], value);
        }
        if (PyErr_Occurred()) return -1;
    } else if (node->has_records && PyTuple_CheckExact(value)) {
        Py_ssize_t size = PyTuple_GET_SIZE(value);
        if (size != 2) {
            if (size > 2)
                PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 2)");
            else
                PyErr_Format(PyExc_ValueError,
                             "not enough values to unpack (expected 2, got %zd)", size);
            return -1;
        }
        PyObject *name = PyTuple_GET_ITEM(value, 0);
        PyObject *index = PyDict_GetItemWithError(node->index, name);
        if (index == NULL) {
            if (PyErr_Occurred()) return -1;
            return not_a(w, NULL, node->expected, name, node->path);
        }
        Py_ssize_t i = PyLong_AsSsize_t(index);
        if (put_varint(w, (uint64_t)i << 1) < 0) return -1;
        return write_node(w, node->children[i], PyTuple_GET_ITEM(value, 1));
    }
    if (node->null_branch >= 0 && value == Py_None)
        return put_varint(w, (uint64_t)node->null_branch << 1);
    if (node->other_branch >= 0) {
        if (put_varint(w, (uint64_t)node->other_branch << 1) < 0) return -1;
        return write_node(w, node->children[node->other_branch], value);
    }
    if (node->access != NULL) return not_a(w, NULL, node->expected, value, node->path);
    return not_a(w, "a (name, fields) tuple", NULL, value, node->path);
}

static int write_node(Writer *w, Node *node, PyObject *value) {
    switch (node->kind) {
    case K_NULL:
        if (value != Py_None) return not_a(w, "None", NULL, value, node->path);
        return 0;
    case K_BOOLEAN:
        if (value == Py_True) return put(w, "\x01", 1);
        if (value == Py_False) return put(w, "\x00", 1);
        return not_a(w, "a bool", NULL, value, node->path);
    case K_INT:
    case K_LONG:
        if (PyLong_CheckExact(value)) {
            int overflow;
            long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (!overflow && (node->kind == K_LONG || (x >= INT32_MIN && x <= INT32_MAX)))
                return put_varint(w, ((uint64_t)x << 1) ^ (uint64_t)(x >> 63));
        }
        return write_integer(w, node, value);
    case K_FLOAT:
    case K_DOUBLE:
        return write_float(w, node, value);
    case K_BYTES:
    case K_STRING:
        return write_text(w, node, value);
    case K_ENUM: {
        PyObject *index = PyDict_GetItemWithError(node->index, value);
        if (index == NULL) {
            if (PyErr_Occurred()) return -1;
            return not_a(w, NULL, node->expected, value, node->path);
        }
        return put_varint(w, (uint64_t)PyLong_AsSsize_t(index) << 1);
    }
    case K_RECORD:
        return write_record(w, node, value);
    case K_UNION:
        return write_union(w, node, value);
    }
    PyErr_SetString(PyExc_SystemError, "unknown schema program node");
    return -1;
}

static void writer_close(Writer *w) {
    if (w->data != w->local) PyMem_Free(w->data);
}

static int write_value(Program *self, Writer *w, PyObject *value, PyObject *const *params,
                            Py_ssize_t nparams) {
    w->data = w->local;
    w->len = 0;
    w->cap = (Py_ssize_t)sizeof(w->local);
    w->program = self;
    w->params = params;
    w->nparams = nparams;
    if (Py_EnterRecursiveCall(" writing an Avro value")) return -1;
    int failed = write_node(w, self->root, value);
    Py_LeaveRecursiveCall();
    return failed;
}

/* encode(prefix, value, *arguments) -> prefix + the Avro binary form of value */
static PyObject *Program_encode(Program *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "encode() takes (prefix: bytes, value, *arguments)");
        return NULL;
    }
    Writer w;
    int failed = write_value(self, &w, args[1], args + 2, nargs - 2);
    if (failed) {
        writer_close(&w);
        return NULL;
    }
    Py_ssize_t head = PyBytes_GET_SIZE(args[0]);
    PyObject *out = PyBytes_FromStringAndSize(NULL, head + w.len);
    if (out != NULL) {
        memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(args[0]), (size_t)head);
        memcpy(PyBytes_AS_STRING(out) + head, w.data, (size_t)w.len);
    }
    writer_close(&w);
    return out;
}

/* write(out: bytearray, value): append the Avro binary form of value (nothing on error) */
static PyObject *Program_write(Program *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyByteArray_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "write() takes (out: bytearray, value)");
        return NULL;
    }
    Writer w;
    if (write_value(self, &w, args[1], NULL, 0) < 0) {
        writer_close(&w);
        return NULL;
    }
    PyObject *out = args[0];
    Py_ssize_t head = PyByteArray_GET_SIZE(out);
    if (PyByteArray_Resize(out, head + w.len) < 0) {
        writer_close(&w);
        return NULL;
    }
    memcpy(PyByteArray_AS_STRING(out) + head, w.data, (size_t)w.len);
    writer_close(&w);
    Py_RETURN_NONE;
}

/* ----------------------------------------------------------------------------- the type */

static int Program_init(Program *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"spec",      "error",  "json_fits", "slow_check",
                               "uuid_text", "header", NULL};
    PyObject *spec, *error, *json_fits = Py_None, *slow_check = Py_None, *uuid_text = Py_None;
    PyObject *header = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OOOO", keywords, &spec, &error,
                                     &json_fits, &slow_check, &uuid_text, &header))
        return -1;
    if (header != Py_None && !PyBytes_CheckExact(header)) {
        PyErr_SetString(PyExc_TypeError, "header must be bytes or None");
        return -1;
    }
    if (!PyExceptionClass_Check(error)) {
        PyErr_SetString(PyExc_TypeError, "error must be an exception class");
        return -1;
    }
    Node *root = node_build(spec, 0);
    if (root == NULL) return -1;
    node_free(self->root);
    self->root = root;
    Py_XSETREF(self->uuid_text, Py_NewRef(uuid_text));
    Py_XSETREF(self->header, header == Py_None ? NULL : Py_NewRef(header));
    Py_XSETREF(self->error, Py_NewRef(error));
    Py_XSETREF(self->json_fits, Py_NewRef(json_fits));
    Py_XSETREF(self->slow_check, Py_NewRef(slow_check));
    return 0;
}

static int Program_traverse(Program *self, visitproc visit, void *arg) {
    Py_VISIT(self->error);
    Py_VISIT(self->json_fits);
    Py_VISIT(self->slow_check);
    Py_VISIT(self->uuid_text);
    Py_VISIT(self->header);
    return 0;
}

static int Program_clear(Program *self) {
    Py_CLEAR(self->error);
    Py_CLEAR(self->json_fits);
    Py_CLEAR(self->slow_check);
    Py_CLEAR(self->uuid_text);
    Py_CLEAR(self->header);
    return 0;
}

static void Program_dealloc(Program *self) {
    PyObject_GC_UnTrack(self);
    Program_clear(self);
    node_free(self->root);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int program_ready(Program *self) {
    if (self->root != NULL) return 0;
    PyErr_SetString(PyExc_ValueError, "Program was not initialised");
    return -1;
}

#define GUARDED(name)                                                                       \
    static PyObject *name##_guarded(Program *self, PyObject *const *args, Py_ssize_t n) { \
        if (program_ready(self) < 0) return NULL;                                           \
        return name(self, args, n);                                                         \
    }
GUARDED(Program_decode)
GUARDED(Program_decode_event)
GUARDED(Program_decode_event_checked)
GUARDED(Program_decode_checked)
GUARDED(Program_read)
GUARDED(Program_encode)
GUARDED(Program_write)

static PyMethodDef Program_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))Program_decode_guarded, METH_FASTCALL,
     "decode(data, pos) -> the value from pos to the end of data"},
    {"decode_checked", (PyCFunction)(void (*)(void))Program_decode_checked_guarded,
     METH_FASTCALL, "decode(data, pos), and the record checks (CodecError if one fails)"},
    {"decode_event", (PyCFunction)(void (*)(void))Program_decode_event_guarded, METH_FASTCALL,
     "decode_event(data, other) -> the value after the header (other(data) without it)"},
    {"decode_event_checked", (PyCFunction)(void (*)(void))Program_decode_event_checked_guarded,
     METH_FASTCALL, "decode_event(data, other), and the record checks"},
    {"read", (PyCFunction)(void (*)(void))Program_read_guarded, METH_FASTCALL,
     "read(data, pos) -> (value, end)"},
    {"encode", (PyCFunction)(void (*)(void))Program_encode_guarded, METH_FASTCALL,
     "encode(prefix, value, *arguments) -> prefix + the Avro binary form of value (the "
     "arguments: fields that a program of objects takes from the call)"},
    {"write", (PyCFunction)(void (*)(void))Program_write_guarded, METH_FASTCALL,
     "write(out, value): append the Avro binary form of value to the bytearray out"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ProgramType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "behest._cavro.Program",
    .tp_basicsize = sizeof(Program),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Program(spec, error, json_fits=None, slow_check=None): a compiled Avro schema",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Program_init,
    .tp_dealloc = (destructor)Program_dealloc,
    .tp_traverse = (traverseproc)Program_traverse,
    .tp_clear = (inquiry)Program_clear,
    .tp_methods = Program_methods,
};

/* Days from 0001-01-01 to 1970-01-01 is 719162; this counts from 1970-01-01. */
static long long days_from_civil(long long y, unsigned m, unsigned d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/* micros(moment, epoch, unit) -> (moment - epoch) // unit: a datetime's microseconds since
 * the Unix epoch, computed here for an aware datetime.datetime (anything else, and any
 * other epoch and unit, by that very expression). */
static PyObject *cavro_micros(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "micros() takes (moment, epoch, unit)");
        return NULL;
    }
    PyObject *moment = args[0];
    if (PyDateTime_CheckExact(moment) && PyDateTime_CheckExact(args[1]) &&
        PyDelta_CheckExact(args[2]) && PyDateTime_DATE_GET_TZINFO(args[1]) == PyDateTime_TimeZone_UTC &&
        PyDateTime_GET_YEAR(args[1]) == 1970 && PyDateTime_GET_MONTH(args[1]) == 1 &&
        PyDateTime_GET_DAY(args[1]) == 1 && PyDateTime_DATE_GET_HOUR(args[1]) == 0 &&
        PyDateTime_DATE_GET_MINUTE(args[1]) == 0 && PyDateTime_DATE_GET_SECOND(args[1]) == 0 &&
        PyDateTime_DATE_GET_MICROSECOND(args[1]) == 0 && PyDateTime_DELTA_GET_DAYS(args[2]) == 0 &&
        PyDateTime_DELTA_GET_SECONDS(args[2]) == 0 &&
        PyDateTime_DELTA_GET_MICROSECONDS(args[2]) == 1) {
        PyObject *tzinfo = PyDateTime_DATE_GET_TZINFO(moment);
        long long offset = 0; /* microseconds east of UTC */
        if (tzinfo != PyDateTime_TimeZone_UTC) {
            if (tzinfo == Py_None) goto general;
            PyObject *delta = PyObject_CallMethod(tzinfo, "utcoffset", "O", moment);
            if (delta == NULL) return NULL;
            if (!PyDelta_Check(delta)) {
                Py_DECREF(delta);
                goto general;
            }
            offset = ((long long)PyDateTime_DELTA_GET_DAYS(delta) * 86400 +
                      PyDateTime_DELTA_GET_SECONDS(delta)) * 1000000LL +
                     PyDateTime_DELTA_GET_MICROSECONDS(delta);
            Py_DECREF(delta);
            if (offset <= -86400000000LL || offset >= 86400000000LL) goto general; /* raises */
        }
        long long days = days_from_civil(PyDateTime_GET_YEAR(moment),
                                         (unsigned)PyDateTime_GET_MONTH(moment),
                                         (unsigned)PyDateTime_GET_DAY(moment));
        long long seconds = days * 86400 + PyDateTime_DATE_GET_HOUR(moment) * 3600 +
                            PyDateTime_DATE_GET_MINUTE(moment) * 60 +
                            PyDateTime_DATE_GET_SECOND(moment);
        return PyLong_FromLongLong(seconds * 1000000LL + PyDateTime_DATE_GET_MICROSECOND(moment) -
                                   offset);
    }
general:;
    PyObject *delta = PyNumber_Subtract(moment, args[1]);
    if (delta == NULL) return NULL;
    PyObject *result = PyNumber_FloorDivide(delta, args[2]);
    Py_DECREF(delta);
    return result;
}

static PyMethodDef cavro_functions[] = {
    {"micros", (PyCFunction)(void (*)(void))cavro_micros, METH_FASTCALL,
     "micros(moment, epoch, unit) -> (moment - epoch) // unit, fast for aware datetimes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cavro_module = {
    PyModuleDef_HEAD_INIT, "behest._cavro",
    "The compiled Avro codec (see behest.avro_program).", -1, cavro_functions,
};

static PyObject *attribute_of(const char *module_name, const char *name) {
    PyObject *module = PyImport_ImportModule(module_name);
    if (module == NULL) return NULL;
    PyObject *value = PyObject_GetAttrString(module, name);
    Py_DECREF(module);
    return value;
}

PyMODINIT_FUNC PyInit__cavro(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) return NULL;
    if (struct_error == NULL) {
        struct_error = attribute_of("struct", "error");
        uuid_type = attribute_of("uuid", "UUID");
        int_name = PyUnicode_InternFromString("int");
        sixty_four = PyLong_FromLong(64);
        if (!struct_error || !uuid_type || !int_name || !sixty_four) return NULL;
        if (!PyType_Check(uuid_type)) {
            PyErr_SetString(PyExc_TypeError, "uuid.UUID is not a class");
            return NULL;
        }
    }
    if (PyType_Ready(&ProgramType) < 0) return NULL;
    PyObject *module = PyModule_Create(&cavro_module);
    if (module == NULL) return NULL;
    if (PyModule_AddIntConstant(module, "VERSION", CAVRO_VERSION) < 0 ||
        PyModule_AddObjectRef(module, "Program", (PyObject *)&ProgramType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
