/* The writer's record digests, compiled (docs/design.md, "The compiled hot path").
 *
 * record_digests(rows, ncaptured, ncontext) -> list of 32-byte digests: for each row,
 * SHA-256(serialize(row[:ncaptured]) || serialize(row[ncaptured:ncontext]) ||
 * serialize(row[ncontext:])), serialize being chain.serialize (the chain's format 2
 * serialization, read there): one type byte per value (N, I, R, T, B), each I as int64 and each
 * R as float64, each T and B length as uint32, all little endian, then the T (UTF-8,
 * surrogatepass) and B bytes. chain.row_digests_python is the reference this must equal
 * (tests/test_compiled.py). The hashing is OpenSSL's libcrypto, as hashlib's: its
 * SHA-256 fetched once and one context reused, where hashlib makes and fetches both per call
 * (550 ns of a record's digest on this kind of machine).
 *
 * Built against the stable ABI of Python 3.11, so one file serves every python3 from 3.11 on.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>

static EVP_MD *sha256_md;
static EVP_MD_CTX *sha256_ctx;

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int buf_room(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + more)
        cap *= 2;
    char *d = PyMem_Realloc(b->data, cap);
    if (d == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

static void put_u64(char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (char)(v >> (8 * i));
}

static void put_u32(char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (8 * i));
}

/* The UTF-8 bytes of a str as str.encode("utf-8", "surrogatepass") gives them; *owner is a
 * new reference to keep while they are used, or NULL when the str's cached UTF-8 serves. */
static const char *utf8_of(PyObject *s, Py_ssize_t *size, PyObject **owner) {
    *owner = NULL;
    const char *u = PyUnicode_AsUTF8AndSize(s, size);
    if (u != NULL)
        return u;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return NULL;
    PyErr_Clear();  /* a lone surrogate: only surrogatepass encodes it */
    PyObject *enc = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (enc == NULL)
        return NULL;
    char *raw;
    if (PyBytes_AsStringAndSize(enc, &raw, size) < 0) {
        Py_DECREF(enc);
        return NULL;
    }
    *owner = enc;
    return raw;
}

#define MAX_VALUES 64

/* serialize(row[lo:hi]) appended to b */
static int serialize(Buf *b, PyObject *row, Py_ssize_t lo, Py_ssize_t hi) {
    Py_ssize_t n = hi - lo, nnum = 0, nvar = 0, i;
    PyObject *owners[MAX_VALUES];
    const char *vdata[MAX_VALUES];
    Py_ssize_t vlen[MAX_VALUES];
    char tags[MAX_VALUES];
    char nums[MAX_VALUES * 8];
    int rc = -1;

    if (n > MAX_VALUES) {
        PyErr_SetString(PyExc_ValueError, "too many values in a record");
        return -1;
    }
    for (i = 0; i < n; i++) {
        PyObject *v = PyTuple_GetItem(row, lo + i);  /* borrowed */
        PyTypeObject *t;
        if (v == NULL)
            goto done;
        t = Py_TYPE(v);
        if (v == Py_None) {
            tags[i] = 'N';
        } else if (t == &PyLong_Type || t == &PyBool_Type) {
            long long x = PyLong_AsLongLong(v);
            if (x == -1 && PyErr_Occurred())
                goto done;
            tags[i] = 'I';
            put_u64(nums + 8 * nnum++, (uint64_t)x);
        } else if (t == &PyFloat_Type) {
            double d = PyFloat_AsDouble(v);
            uint64_t bits;
            memcpy(&bits, &d, 8);
            tags[i] = 'R';
            put_u64(nums + 8 * nnum++, bits);
        } else if (t == &PyUnicode_Type) {
            tags[i] = 'T';
            vdata[nvar] = utf8_of(v, &vlen[nvar], &owners[nvar]);
            if (vdata[nvar] == NULL)
                goto done;
            nvar++;
        } else if (t == &PyBytes_Type) {
            char *raw;
            tags[i] = 'B';
            if (PyBytes_AsStringAndSize(v, &raw, &vlen[nvar]) < 0)
                goto done;
            vdata[nvar] = raw;
            owners[nvar++] = NULL;
        } else {
            PyObject *name = PyType_GetName(t);
            PyErr_Format(PyExc_TypeError, "cannot serialize a %S value", name);
            Py_XDECREF(name);
            goto done;
        }
    }
    {
        Py_ssize_t size = n + 8 * nnum + 4 * nvar, j;
        for (j = 0; j < nvar; j++) {
            if ((uint64_t)vlen[j] > UINT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "a value longer than 4 GiB");
                goto done;
            }
            size += vlen[j];
        }
        if (buf_room(b, size) < 0)
            goto done;
        char *p = b->data + b->len;
        memcpy(p, tags, n);
        p += n;
        memcpy(p, nums, 8 * nnum);
        p += 8 * nnum;
        for (j = 0; j < nvar; j++, p += 4)
            put_u32(p, (uint32_t)vlen[j]);
        for (j = 0; j < nvar; j++) {
            memcpy(p, vdata[j], vlen[j]);
            p += vlen[j];
        }
        b->len += size;
    }
    rc = 0;
done:
    for (i = 0; i < nvar; i++)
        Py_XDECREF(owners[i]);
    return rc;
}

static PyObject *record_digests(PyObject *self, PyObject *args) {
    PyObject *rows, *out = NULL;
    Py_ssize_t ncaptured, ncontext, count, k;
    Buf b = {NULL, 0, 0};

    if (!PyArg_ParseTuple(args, "Onn", &rows, &ncaptured, &ncontext))
        return NULL;
    if (!PyList_Check(rows)) {
        PyErr_SetString(PyExc_TypeError, "rows must be a list");
        return NULL;
    }
    if (ncaptured < 0 || ncontext < ncaptured) {
        PyErr_SetString(PyExc_ValueError, "need 0 <= ncaptured <= ncontext");
        return NULL;
    }
    count = PyList_Size(rows);
    out = PyList_New(count);
    if (out == NULL)
        goto fail;
    for (k = 0; k < count; k++) {
        PyObject *row = PyList_GetItem(rows, k);  /* borrowed */
        Py_ssize_t width;
        if (row == NULL)
            goto fail;
        if (!PyTuple_Check(row)) {
            PyErr_SetString(PyExc_TypeError, "a record must be a tuple");
            goto fail;
        }
        width = PyTuple_Size(row);
        if (width < ncontext) {
            PyErr_SetString(PyExc_ValueError, "a record shorter than its context");
            goto fail;
        }
        b.len = 0;
        if (serialize(&b, row, 0, ncaptured) < 0 || serialize(&b, row, ncaptured, ncontext) < 0
                || serialize(&b, row, ncontext, width) < 0)
            goto fail;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        if (!EVP_DigestInit_ex2(sha256_ctx, sha256_md, NULL)
                || !EVP_DigestUpdate(sha256_ctx, b.data, (size_t)b.len)
                || !EVP_DigestFinal_ex(sha256_ctx, md, &mdlen)) {
            PyErr_SetString(PyExc_RuntimeError, "libcrypto's SHA-256 failed");
            goto fail;
        }
        PyObject *d = PyBytes_FromStringAndSize((const char *)md, mdlen);
        if (d == NULL)
            goto fail;
        PyList_SetItem(out, k, d);  /* steals d */
    }
    PyMem_Free(b.data);
    return out;
fail:
    PyMem_Free(b.data);
    Py_XDECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"record_digests", record_digests, METH_VARARGS,
     "record_digests(rows, ncaptured, ncontext): the format 4 record digest of each row"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_record_digests", NULL, 0, methods,
};

PyMODINIT_FUNC PyInit__record_digests(void) {
    if (sha256_md == NULL) {
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
        sha256_ctx = EVP_MD_CTX_new();
        if (sha256_md == NULL || sha256_ctx == NULL) {
            PyErr_SetString(PyExc_ImportError, "libcrypto has no SHA-256");
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
