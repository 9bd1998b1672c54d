/* The writer's decoder of raw records, compiled (docs/design.md, "The compiled hot path").
 *
 * decode_all(raws, identities, max_args, offset, texts, cwds, abi_words) does what
 * records.Decoder.decode_all_python does, which is the reference it is held to
 * (tests/test_compiled.py): the same row tuples, the same identities appended. The layouts are
 * bpf/auditd_lite.h's, as records.EXIT_EVENT and records.EXEC_EVENT give them (checked at import
 * against these sizes); ``texts`` and ``cwds`` are the decoder's memos (comm and filename text;
 * a working directory's (cwd, cwd_status)), looked up here as there, so their values are made by
 * the same Python; ``abi_words`` the words of records.ABI_WORDS by number.
 *
 * Built against the stable ABI of Python 3.11, so one file serves every python3 from 3.11 on.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <sys/sysmacros.h>

enum { EV_EXEC = 1, EV_EXEC_FAILED = 2, EV_EXIT = 3 };
enum {
    FLAG_ARGS_TRUNCATED = 1, FLAG_ARGC_TRUNCATED = 2, FLAG_ARGV_FROM_STASH = 8, FLAG_NO_STASH = 16,
    FLAG_NO_CWD = 32, FLAG_CWD_TRUNCATED = 64, FLAG_CWD_DELETED = 128, FLAG_CWD_CHROOT = 256,
    FLAG_EXE_ID = 512,
};
#define CWD_FLAGS (FLAG_NO_CWD | FLAG_CWD_TRUNCATED | FLAG_CWD_DELETED | FLAG_CWD_CHROOT)
#define EXIT_SIZE 80
#define EXEC_SIZE 152
#define ROW_WIDTH 28

static PyObject *s_exec, *s_exec_failed, *s_exit;

static uint16_t u16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t u64(const unsigned char *p) { return (uint64_t)u32(p) | (uint64_t)u32(p + 4) << 32; }

static PyObject *same(PyObject *o) { Py_INCREF(o); return o; }

/* ts + offset as Python adds them (any size) */
static PyObject *plus(uint64_t ts, long long offset, PyObject *offset_obj) {
    __int128 sum = (__int128)ts + offset;
    if (offset_obj == NULL && sum >= INT64_MIN && sum <= INT64_MAX)
        return PyLong_FromLongLong((long long)sum);
    PyObject *a = PyLong_FromUnsignedLongLong(ts);
    PyObject *b = offset_obj != NULL ? same(offset_obj) : PyLong_FromLongLong(offset);
    PyObject *r = a != NULL && b != NULL ? PyNumber_Add(a, b) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(b);
    return r;
}

static PyObject *memo_get(PyObject *memo, const unsigned char *p, Py_ssize_t n) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)p, n);
    if (key == NULL)
        return NULL;
    PyObject *v = PyObject_GetItem(memo, key);
    Py_DECREF(key);
    return v;
}

/* Fills a new tuple; every item given is a new reference (NULL: failed, all released) */
static PyObject *tuple_of(PyObject **items, Py_ssize_t n) {
    Py_ssize_t i;
    for (i = 0; i < n; i++)
        if (items[i] == NULL)
            goto fail;
    PyObject *t = PyTuple_New(n);
    if (t == NULL)
        goto fail;
    for (i = 0; i < n; i++)
        PyTuple_SetItem(t, i, items[i]);  /* steals */
    return t;
fail:
    for (i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

static PyObject *none(void) { Py_INCREF(Py_None); return Py_None; }
static PyObject *ull(uint64_t v) { return PyLong_FromUnsignedLongLong(v); }
static PyObject *sl(long long v) { return PyLong_FromLongLong(v); }

/* The columns every record begins with (struct event_hdr): event, time_ns, pid, tid, ppid,
 * uid, gid, comm, start_ns; returns how many */
static int header(PyObject **it, const unsigned char *r, PyObject *event, long long off, PyObject *off_obj,
                  PyObject *texts) {
    int i = 0;
    it[i++] = same(event);
    it[i++] = plus(u64(r + 16), off, off_obj);
    it[i++] = ull(u32(r + 4));
    it[i++] = ull(u32(r + 8));
    it[i++] = ull(u32(r + 12));
    it[i++] = ull(u32(r + 40));
    it[i++] = ull(u32(r + 44));
    it[i++] = memo_get(texts, r + 48, 16);
    it[i++] = ull(u64(r + 24));
    return i;
}

static PyObject *decode_exit(const unsigned char *r, long long off, PyObject *off_obj, PyObject *texts) {
    uint32_t status = u32(r + 72);
    PyObject *it[ROW_WIDTH];
    int i = header(it, r, s_exit, off, off_obj, texts);
    while (i < 19)
        it[i++] = none();
    it[i++] = ull(status);
    it[i++] = sl((status >> 8) & 0xFF);
    it[i++] = sl(status & 0x7F);
    it[i++] = sl((status >> 7) & 1);
    it[i++] = ull(u64(r + 64));
    it[i++] = none();
    it[i++] = none();
    it[i++] = none();
    it[i++] = ull(u64(r + 32));
    return tuple_of(it, ROW_WIDTH);
}

/* raw[a:b] as Python slices it: clamped to the record (the lengths are the kernel's, a short
 * record gives shorter values there too) */
static const unsigned char *slice(const unsigned char *r, Py_ssize_t size, Py_ssize_t a, Py_ssize_t b,
                                  Py_ssize_t *len) {
    if (a > size)
        a = size;
    if (b > size)
        b = size;
    *len = b > a ? b - a : 0;
    return r + a;
}

/* The argument bytes as the reference keeps them, and the argc and truncation it gives */
static PyObject *arguments(const unsigned char *a, Py_ssize_t al, uint32_t flags, long long max_args,
                           uint32_t *argc, int *truncated) {
    if (al && a[al - 1] == 0)
        al--;
    Py_ssize_t count = 1, i, cut = al;
    long long seen = 0;
    for (i = 0; i < al; i++) {
        if (a[i] == 0) {
            count++;
            if (++seen == max_args && cut == al)
                cut = i;  /* the max_args-th separator: what follows is cut */
        }
    }
    if (!(flags & (FLAG_ARGS_TRUNCATED | FLAG_ARGV_FROM_STASH)))
        *argc = (uint32_t)count;
    else if ((uint64_t)count > *argc)
        *argc = (uint32_t)count;
    if (count > max_args) {
        al = cut;
        *truncated = 1;
    }
    return PyBytes_FromStringAndSize((const char *)a, al);
}

static PyObject *decode_exec(const unsigned char *r, Py_ssize_t size, int kind, long long max_args,
                             long long off, PyObject *off_obj, PyObject *texts, PyObject *cwds,
                             PyObject *abi_words, PyObject **identity) {
    uint32_t argc = u32(r + 92), flags = u32(r + 96);
    int32_t err = (int32_t)u32(r + 88), old_pid = (int32_t)u32(r + 84);
    uint16_t fl = u16(r + 100), al = u16(r + 102), cl = u16(r + 104), abi = u16(r + 106);
    uint32_t mntns = u32(r + 108), kdev = u32(r + 112);
    Py_ssize_t end = EXEC_SIZE + fl, n_name, n_args, n_cwd;
    const unsigned char *name = slice(r, size, EXEC_SIZE, end, &n_name);
    const unsigned char *argp = slice(r, size, end, end + al, &n_args);
    const unsigned char *cwdp = slice(r, size, end + al, end + al + cl, &n_cwd);
    int truncated = (flags & (FLAG_ARGS_TRUNCATED | FLAG_ARGC_TRUNCATED)) != 0;
    PyObject *it[ROW_WIDTH], *cwd = NULL, *key;
    int i = 0;

    *identity = NULL;
    if (kind == EV_EXEC && (flags & FLAG_EXE_ID)) {
        dev_t dev = makedev(kdev >> 20, kdev & 0xFFFFF);
        PyObject *id[5] = {ull((uint64_t)dev), ull(u64(r + 120)), ull(u64(r + 128)), ull(u64(r + 136)),
                           ull(u64(r + 144))};
        *identity = tuple_of(id, 5);
        if (*identity == NULL)
            return NULL;
    }
    key = Py_BuildValue("(y#kk)", (const char *)cwdp, n_cwd, (unsigned long)(flags & CWD_FLAGS),
                        (unsigned long)mntns);
    if (key != NULL) {
        cwd = PyObject_GetItem(cwds, key);
        Py_DECREF(key);
    }
    if (cwd != NULL && (!PyTuple_Check(cwd) || PyTuple_Size(cwd) != 2)) {
        PyErr_SetString(PyExc_TypeError, "a working directory is (cwd, cwd_status)");
        Py_CLEAR(cwd);
    }
    if (cwd == NULL) {
        Py_CLEAR(*identity);
        return NULL;
    }
    PyObject *filename = memo_get(texts, name, n_name);
    PyObject *args = al ? arguments(argp, n_args, flags, max_args, &argc, &truncated)
                        : PyBytes_FromStringAndSize("", 0);
    if ((flags & FLAG_NO_STASH) && (kind == EV_EXEC_FAILED || !al))
        truncated = 1;
    i = header(it, r, kind == EV_EXEC ? s_exec : s_exec_failed, off, off_obj, texts);
    it[i++] = sl(old_pid);
    it[i++] = ull(u32(r + 72));
    it[i++] = ull(u32(r + 76));
    it[i++] = ull(u32(r + 80));
    it[i++] = ull(u64(r + 64));
    it[i++] = filename;
    it[i++] = args;
    it[i++] = ull(argc);
    it[i++] = sl(truncated ? 1 : 0);
    it[i++] = kind == EV_EXEC_FAILED ? sl(err) : none();
    while (i < 24)
        it[i++] = none();
    it[i++] = same(PyTuple_GetItem(cwd, 0));
    it[i++] = same(PyTuple_GetItem(cwd, 1));
    Py_DECREF(cwd);
    PyObject *word = abi < PyTuple_Size(abi_words) ? PyTuple_GetItem(abi_words, abi) : Py_None;
    it[i++] = same(word);
    it[i++] = ull(u64(r + 32));
    PyObject *row = tuple_of(it, ROW_WIDTH);
    if (row == NULL)
        Py_CLEAR(*identity);
    return row;
}

static PyObject *decode_all(PyObject *self, PyObject *args) {
    PyObject *raws, *identities, *offset_obj, *texts, *cwds, *abi_words, *out = NULL;
    long long max_args, off = 0;
    int overflow = 0;

    if (!PyArg_ParseTuple(args, "OOLOOOO", &raws, &identities, &max_args, &offset_obj, &texts, &cwds,
                          &abi_words))
        return NULL;
    if (max_args < 1) {
        PyErr_SetString(PyExc_ValueError, "max_args must be at least 1");
        return NULL;
    }
    if (!PyTuple_Check(abi_words)) {
        PyErr_SetString(PyExc_TypeError, "abi_words must be a tuple");
        return NULL;
    }
    if (identities != Py_None && !PyList_Check(identities)) {
        PyErr_SetString(PyExc_TypeError, "identities must be a list or None");
        return NULL;
    }
    off = PyLong_AsLongLongAndOverflow(offset_obj, &overflow);
    if (off == -1 && PyErr_Occurred())
        return NULL;
    PyObject *big = overflow ? offset_obj : NULL;  /* past int64: added as Python does */
    PyObject *iter = PyObject_GetIter(raws);
    if (iter == NULL)
        return NULL;
    out = PyList_New(0);
    if (out == NULL)
        goto fail;
    PyObject *raw;
    while ((raw = PyIter_Next(iter)) != NULL) {
        char *p;
        Py_ssize_t size;
        PyObject *row = NULL, *identity = NULL;
        if (PyBytes_AsStringAndSize(raw, &p, &size) < 0) {
            Py_DECREF(raw);
            goto fail;
        }
        const unsigned char *r = (const unsigned char *)p;
        int kind = size ? r[0] : -1;
        if (kind == EV_EXIT) {
            if (size < EXIT_SIZE)
                PyErr_SetString(PyExc_ValueError, "an exit record shorter than its struct");
            else
                row = decode_exit(r, off, big, texts);
        } else if (kind == EV_EXEC || kind == EV_EXEC_FAILED) {
            if (size < EXEC_SIZE)
                PyErr_SetString(PyExc_ValueError, "an exec record shorter than its struct");
            else
                row = decode_exec(r, size, kind, max_args, off, big, texts, cwds, abi_words, &identity);
        } else {
            PyErr_Format(PyExc_ValueError, "unknown record type %d", kind);
        }
        Py_DECREF(raw);
        if (row == NULL)
            goto fail;
        if (identity != NULL && identities != Py_None) {
            PyObject *pair = Py_BuildValue("(nN)", PyList_Size(out), identity);
            identity = NULL;
            if (pair == NULL || PyList_Append(identities, pair) < 0) {
                Py_XDECREF(pair);
                Py_DECREF(row);
                goto fail;
            }
            Py_DECREF(pair);
        }
        Py_XDECREF(identity);
        int rc = PyList_Append(out, row);
        Py_DECREF(row);
        if (rc < 0)
            goto fail;
    }
    if (PyErr_Occurred())
        goto fail;
    Py_DECREF(iter);
    return out;
fail:
    Py_DECREF(iter);
    Py_XDECREF(out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"decode_all", decode_all, METH_VARARGS,
     "decode_all(raws, identities, max_args, offset, texts, cwds, abi_words): records.Decoder's rows"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_decode", NULL, 0, methods};

PyMODINIT_FUNC PyInit__decode(void) {
    s_exec = PyUnicode_InternFromString("exec");
    s_exec_failed = PyUnicode_InternFromString("exec_failed");
    s_exit = PyUnicode_InternFromString("exit");
    if (s_exec == NULL || s_exec_failed == NULL || s_exit == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "EXIT_SIZE", EXIT_SIZE) < 0
                      || PyModule_AddIntConstant(m, "EXEC_SIZE", EXEC_SIZE) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
