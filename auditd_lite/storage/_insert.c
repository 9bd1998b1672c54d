/* The writer's inserts, compiled (docs/design.md, "The compiled hot path").
 *
 * insert(connection, rows, event, exit_sql, exit_columns, exec_sql, exec_columns):
 * the rows whose value at ``event`` is "exit" through exit_sql, binding the values at
 * exit_columns, then every other row through exec_sql and exec_columns, on the sqlite3
 * connection's own handle, in the transaction it has open. None when every row is in, else
 * (SQLite's extended result code, its message): the caller raises what Python's sqlite3
 * module would have (storage/batches.py), and its transaction is rolled back there.
 *
 * What it replaces is the sqlite3 module's executemany, which binds the same way (None, int,
 * float, str and bytes to NULL, INTEGER, REAL, TEXT and BLOB) but releases and takes back the
 * GIL around every row's step and converts each parameter through its adapters: a third of
 * the instructions of a batch's insert (docs/design.md). This holds the GIL, giving it up every
 * YIELD_EVERY rows so that the collector is not kept waiting for a whole batch, and the
 * connection's mutex in between (SQLite is built serialized, and every call takes it).
 *
 * The handle is the first field after the object header of the module's Connection, as in
 * CPython 3.11 to 3.13 (Modules/_sqlite/connection.h; every version since pysqlite's first).
 * storage/batches.py uses this only on those versions, and only after filename() of a
 * connection has given the name SQLite itself gives for its main database (PRAGMA
 * database_list); otherwise the module's executemany runs.
 *
 * Built against the stable ABI of Python 3.11, so one file serves every python3 from 3.11 on.
 */
#define Py_LIMITED_API 0x030B0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>

#include <sqlite3.h>

#define YIELD_EVERY 256
#define MAX_COLUMNS 64

typedef struct {
    PyObject_HEAD
    sqlite3 *db;
} ConnectionHead;

static PyObject *connection_type;  /* sqlite3.Connection */

static sqlite3 *handle_of(PyObject *connection) {
    int is = PyObject_IsInstance(connection, connection_type);
    if (is < 0)
        return NULL;
    if (!is) {
        PyErr_SetString(PyExc_TypeError, "not a sqlite3.Connection");
        return NULL;
    }
    sqlite3 *db = ((ConnectionHead *)connection)->db;
    if (db == NULL)
        PyErr_SetString(PyExc_ValueError, "the connection is closed");
    return db;
}

/* Bind one Python value as the sqlite3 module does; SQLite's code, or -1 with a Python error. */
static int bind(sqlite3_stmt *st, int at, PyObject *v) {
    PyTypeObject *t = Py_TYPE(v);  /* the exact types first: under the limited API each
                                      PyXxx_Check is a call */
    if (v == Py_None)
        return sqlite3_bind_null(st, at);
    if (t == &PyLong_Type || (t != &PyUnicode_Type && t != &PyBytes_Type && PyLong_Check(v))) {
        long long x = PyLong_AsLongLong(v);
        if (x == -1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {  /* the module's words */
                PyErr_Clear();
                PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to SQLite INTEGER");
            }
            return -1;
        }
        return sqlite3_bind_int64(st, at, x);
    }
    if (t != &PyUnicode_Type && t != &PyBytes_Type && PyFloat_Check(v)) {
        double d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        return sqlite3_bind_double(st, at, d);
    }
    if (t == &PyUnicode_Type || (t != &PyBytes_Type && PyUnicode_Check(v))) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(v, &len);
        if (s == NULL)
            return -1;
        if (len > INT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "string longer than INT_MAX bytes");
            return -1;
        }
        return sqlite3_bind_text(st, at, s, (int)len, SQLITE_STATIC);
    }
    if (PyBytes_Check(v)) {
        char *s;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(v, &s, &len) < 0)
            return -1;
        if (len > INT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "BLOB longer than INT_MAX bytes");
            return -1;
        }
        return sqlite3_bind_blob(st, at, s, (int)len, SQLITE_STATIC);
    }
    PyObject *name = PyType_GetName(Py_TYPE(v));
    PyErr_Format(PyExc_TypeError, "cannot bind a %S value", name);
    Py_XDECREF(name);
    return -1;
}

/* The column indexes of a tuple, checked once: n of them into out, the highest into *top. */
static int columns_of(PyObject *cols, Py_ssize_t *out, Py_ssize_t *n, Py_ssize_t *top) {
    if (!PyTuple_Check(cols)) {
        PyErr_SetString(PyExc_TypeError, "columns must be a tuple");
        return -1;
    }
    *n = PyTuple_Size(cols);
    if (*n > MAX_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "too many columns");
        return -1;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        out[i] = PyLong_AsSsize_t(PyTuple_GetItem(cols, i));
        if (out[i] < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a column index below 0");
            return -1;
        }
        if (out[i] > *top)
            *top = out[i];
    }
    return 0;
}

/* One statement over the rows of one kind (want_exit: those whose event is "exit");
 * 0, SQLite's error code (> 0), or -1 with a Python error set. */
static int run(sqlite3 *db, PyObject *rows, Py_ssize_t event, PyObject *exit_word, int want_exit,
               const char *sql, PyObject *cols, Py_ssize_t *since_yield) {
    Py_ssize_t at[MAX_COLUMNS], ncols, top = event, n = PyList_Size(rows);
    sqlite3_stmt *st = NULL;
    int rc = 0;

    if (columns_of(cols, at, &ncols, &top) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GetItem(rows, i);  /* borrowed */
        if (!PyTuple_Check(row)) {
            PyErr_SetString(PyExc_TypeError, "a row is not a tuple");
            rc = -1;
            break;
        }
        if (PyTuple_Size(row) <= top) {  /* as the reference's itemgetter says it */
            PyErr_SetString(PyExc_IndexError, "tuple index out of range");
            rc = -1;
            break;
        }
        int is_exit = PyObject_RichCompareBool(PyTuple_GetItem(row, event), exit_word, Py_EQ);
        if (is_exit < 0) {
            rc = -1;
            break;
        }
        if (is_exit != want_exit)
            continue;
        if (st == NULL && (rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL)) != SQLITE_OK)
            break;
        for (Py_ssize_t j = 0; j < ncols && rc == 0; j++)
            rc = bind(st, (int)j + 1, PyTuple_GetItem(row, at[j]));
        if (rc != 0)
            break;
        rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
            break;
        rc = sqlite3_reset(st);
        if (rc != SQLITE_OK)
            break;
        if (++*since_yield >= YIELD_EVERY) {
            /* not holding the connection's mutex while another thread may run */
            sqlite3_mutex *m = sqlite3_db_mutex(db);
            *since_yield = 0;
            sqlite3_mutex_leave(m);
            Py_BEGIN_ALLOW_THREADS
            Py_END_ALLOW_THREADS
            sqlite3_mutex_enter(m);
        }
    }
    if (rc > 0 && sqlite3_errcode(db) != SQLITE_OK)
        rc = sqlite3_extended_errcode(db);  /* else rc says it: a step that gave a row */
    if (st != NULL) {
        sqlite3_clear_bindings(st);  /* no pointer into the rows' buffers outlives the call */
        sqlite3_finalize(st);
    }
    return rc;
}

static PyObject *insert(PyObject *self, PyObject *args) {
    PyObject *connection, *rows, *exit_cols, *exec_cols;
    Py_ssize_t event;
    const char *exit_sql, *exec_sql;
    if (!PyArg_ParseTuple(args, "OO!nsO!sO!", &connection, &PyList_Type, &rows, &event,
                          &exit_sql, &PyTuple_Type, &exit_cols, &exec_sql, &PyTuple_Type,
                          &exec_cols))
        return NULL;
    if (event < 0) {
        PyErr_SetString(PyExc_ValueError, "the event's index is below 0");
        return NULL;
    }
    sqlite3 *db = handle_of(connection);
    if (db == NULL)
        return NULL;
    if (sqlite3_get_autocommit(db)) {  /* each row would be a transaction of its own */
        PyErr_SetString(PyExc_RuntimeError, "insert needs the connection's transaction open");
        return NULL;
    }
    PyObject *exit_word = PyUnicode_FromString("exit");
    if (exit_word == NULL)
        return NULL;
    Py_ssize_t since_yield = 0;
    PyObject *result = NULL;
    /* Every SQLite call takes the connection's mutex (SQLite is built serialized); it is
     * recursive, so held here each call's take is a count, not an atomic operation. */
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    int rc = run(db, rows, event, exit_word, 1, exit_sql, exit_cols, &since_yield);
    if (rc == 0)
        rc = run(db, rows, event, exit_word, 0, exec_sql, exec_cols, &since_yield);
    Py_DECREF(exit_word);
    if (rc == 0)
        result = Py_NewRef(Py_None);
    else if (rc > 0)
        result = Py_BuildValue("(is)", rc, sqlite3_errmsg(db));
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return result;
}

static PyObject *filename(PyObject *self, PyObject *connection) {
    sqlite3 *db = handle_of(connection);
    if (db == NULL)
        return NULL;
    const char *name = sqlite3_db_filename(db, "main");
    return PyUnicode_FromString(name ? name : "");
}

static PyMethodDef methods[] = {
    {"insert", insert, METH_VARARGS, "A batch's exits, then its other rows, on the connection's handle."},
    {"filename", filename, METH_O, "The file name SQLite has for the connection's main database."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_insert", NULL, -1, methods};

PyMODINIT_FUNC PyInit__insert(void) {
    PyObject *sqlite3_module = PyImport_ImportModule("sqlite3");
    if (sqlite3_module == NULL)
        return NULL;
    connection_type = PyObject_GetAttrString(sqlite3_module, "Connection");
    Py_DECREF(sqlite3_module);
    if (connection_type == NULL)
        return NULL;
    return PyModule_Create(&module);
}
