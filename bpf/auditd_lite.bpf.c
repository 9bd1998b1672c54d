/* auditd-lite kernel side, compiled by bcc at start-up.
 *
 * Settings arrive as -D constants fixed before load (never text
 * substitution): MIN_DURATION_NS, MAX_ARGS, ARG_BYTES, ARGS_BUF,
 * FILENAME_BUF, RINGBUF_PAGES, WAKEUP_EVERY, STASH_ENTRIES, CLAIM_ENTRIES,
 * HAVE_GROUP_DEAD, NR_EXECVE, NR_EXECVEAT, USE_PERFBUF, the FN_* names of the
 * execve functions the running kernel's BTF has, and the OFF_* struct
 * offsets resolved from that BTF (auditd_lite/capture/btf.py). Struct fields
 * are therefore read by offset, never through header layouts, which may
 * belong to another kernel.
 *
 * No program needs perf_event_open (docs/design.md, "Attaching without
 * perf_event_open"): the daemon attaches every one with
 * BPF_RAW_TRACEPOINT_OPEN, which needs CAP_BPF and CAP_PERFMON only. Two sets
 * see the execve calls, and the loader loads one of them (docs/design.md,
 * "Hooking execve, not every system call"):
 *   fentry/fexit on the execve functions themselves (one pair per function
 *     and ABI): nothing runs on any other system call;
 *   raw_syscalls:sys_enter/sys_exit filtered by syscall number, where the
 *     kernel cannot attach tracing programs: every system call of the host
 *     pays for the tracepoint.
 * sched_process_exec and sched_process_exit are raw tracepoints in both.
 */
#include "auditd_lite.h"

/* A raw tracepoint program that bcc loads but does not attach: the compiler
 * child hands it to the daemon, which attaches it (auditd_lite/capture/
 * compiler.py). bcc's RAW_TRACEPOINT_PROBE names would be attached by bcc in
 * the child, and detached when it exits. */
#define PROBE(event) int probe__##event(struct bpf_raw_tracepoint_args *ctx)

#ifdef USE_HEADER_LAYOUT
/* No BTF on this kernel: the loader defines OFF_* as offsetof() expressions
 * over these headers and logs that it did so. */
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/cred.h>
#include <linux/mm_types.h>
#include <linux/binfmts.h>
#include <asm/ptrace.h>
#endif

/* x86's thread_info.status bit for a 32-bit syscall (arch/x86/include/asm/
 * thread_info.h): its number is the i386 table's, its pointers 32-bit */
#define TS_COMPAT 0x0002
/* i386 numbers of execve and execveat (arch/x86/entry/syscalls/syscall_32.tbl) */
#define NR_IA32_EXECVE 11
#define NR_IA32_EXECVEAT 358
/* x32 calls carry this bit in their number (arch/x86/include/uapi/asm/unistd.h) */
#define X32_SYSCALL_BIT 0x40000000
#define NR_X32_EXECVE (X32_SYSCALL_BIT | 520)
#define NR_X32_EXECVEAT (X32_SYSCALL_BIT | 545)
/* signal_struct.flags: the whole group is exiting, group_exit_code holds the
 * wait status (include/linux/sched/signal.h, the same since 2.6) */
#define SIGNAL_GROUP_EXIT 0x00000004

/* Clamp on the very register that is used next: clang otherwise proves the
 * bound redundant, drops it, and the verifier rejects the access. */
#define CLAMP(v, max)                    \
    do {                                 \
        asm volatile("" : "+r"(v));      \
        if ((v) > (max))                 \
            (v) = (max);                 \
    } while (0)

#define READ_AT(dst, base, off) \
    bpf_probe_read_kernel(&(dst), sizeof(dst), (const void *)((const char *)(base) + (off)))

struct exec_buf {
    struct exec_event e;
    /* filename (<= FILENAME_BUF), arguments, then in a record the working
     * directory; the arguments get twice their bound so the verifier can see
     * every variable-offset read fit */
    char data[FILENAME_BUF + 2 * ARGS_BUF + CWD_BUF];
    /* the entry's walk of the working directory, copied into data[] when the
     * record is made; twice its bound, as for the arguments */
    char cwd[2 * CWD_BUF];
    /* the walk's state in map memory, not in registers: the verifier then
     * sees one state per iteration whatever branch the last one took, where
     * a register's exact range would double the states at every branch
     * (5.10 and 6.1 refused the walk for it, E2BIG) */
    u64 cwd_off;
    u32 cwd_flags;
    u32 _pad;
    /* the argument loop's exits, likewise: where the argument that filled the room ends, and
     * the index after it */
    u64 edge_last;
    u64 edge_next;
};

#ifdef USE_PERFBUF
BPF_PERF_OUTPUT(events);
#else
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(since_wakeup, u32, 1);
#endif
BPF_PERCPU_ARRAY(counters, u64, CNT_MAX);
BPF_PERCPU_ARRAY(scratch, struct exec_buf, 1);
/* syscall-entry copy of filename and argv, per thread; LRU so a thread that
 * died inside execve cannot leak an entry forever */
BPF_TABLE("lru_hash", u32, struct exec_buf, stash, STASH_ENTRIES);

#if !HAVE_GROUP_DEAD
/* Without sched_process_exit's group_dead argument, the exiting thread reads
 * signal->live, which every thread decremented before the tracepoint: when
 * threads die together several read 0. The first of them claims the process
 * here (BPF_NOEXIST is atomic), the others find the claim. The claim is
 * released when the group leader is freed, which the kernel does only after
 * every thread of the group has passed sched_process_exit. That release is
 * best effort (a free in softirq that interrupts an exit holding the same
 * bucket lock gets -EBUSY): a claim left behind is evicted by the LRU, and
 * since no other process has its (tgid, start time) it never hides one. */
struct exit_claim {
    u32 tgid;
    u32 _pad;
    u64 start_ns;
};
BPF_TABLE("lru_hash", struct exit_claim, u8, exit_claims, CLAIM_ENTRIES);
#endif

static __always_inline void count(u32 idx)
{
    u64 *c = counters.lookup(&idx);
    if (c)
        (*c)++;
}

#ifndef USE_PERFBUF
/* The reader polls every 100 ms and is woken explicitly only every
 * WAKEUP_EVERY records per CPU, so a storm costs one wakeup per batch
 * rather than one per record, and the buffer never waits long to drain. */
static __always_inline u64 wake_flags(void)
{
    u32 zero = 0;
    u32 *n = since_wakeup.lookup(&zero);
    if (!n)
        return 0;
    if (++*n >= WAKEUP_EVERY) {
        *n = 0;
        return BPF_RB_FORCE_WAKEUP;
    }
    return BPF_RB_NO_WAKEUP;
}
#endif

static __always_inline void emit(void *ctx, void *data, u64 size)
{
    /* hide what clang knows of size so the bound check below stays, on the
     * very register the helper receives, where the verifier can see it */
    asm volatile("" : "+r"(size));
#ifdef USE_PERFBUF
    if (size > sizeof(struct exec_buf))
        return;
    if (events.perf_submit(ctx, data, size) < 0)
        count(CNT_LOST);
#else
    u64 wake = wake_flags();
    if (size > sizeof(struct exec_buf))
        return;
    if (events.ringbuf_output(data, size, wake) < 0)
        count(CNT_LOST);
#endif
}

static __always_inline void fill_hdr(struct event_hdr *h, u32 type, struct task_struct *task)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 ugid = bpf_get_current_uid_gid();
    void *parent = NULL, *leader = NULL, *pleader = NULL;
    u32 ppid = 0;
    u64 start = 0, pstart = 0;

    READ_AT(parent, task, OFF_TASK_REAL_PARENT);
    if (parent) {
        READ_AT(ppid, parent, OFF_TASK_TGID);
        /* the parent process's identity is its group leader's start, as ours is */
        READ_AT(pleader, parent, OFF_TASK_GROUP_LEADER);
        if (pleader)
            READ_AT(pstart, pleader, OFF_TASK_START_TIME);
    }
    READ_AT(leader, task, OFF_TASK_GROUP_LEADER);
    if (leader)
        READ_AT(start, leader, OFF_TASK_START_TIME);

    h->type = type;
    h->pid = id >> 32;
    h->tid = (u32)id;
    h->ppid = ppid;
    h->ts_ns = bpf_ktime_get_ns();
    h->start_ns = start;
    h->pstart_ns = pstart;
    h->uid = (u32)ugid;
    h->gid = ugid >> 32;
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

static __always_inline void fill_creds(struct exec_event *e, struct task_struct *task)
{
    void *cred = NULL;
    u32 euid = 0, auid = (u32)-1, ses = (u32)-1;

    READ_AT(cred, task, OFF_TASK_CRED);
    if (cred)
        READ_AT(euid, cred, OFF_CRED_EUID);
#ifdef OFF_TASK_LOGINUID
    READ_AT(auid, task, OFF_TASK_LOGINUID);
    READ_AT(ses, task, OFF_TASK_SESSIONID);
#endif
    e->euid = euid;
    e->auid = auid;
    e->sessionid = ses;
    e->cgroup_id = bpf_get_current_cgroup_id();
}

static __always_inline u64 record_size(struct exec_event *e)
{
    u64 fl = e->filename_len, al = e->args_len, cl = e->cwd_len;
    CLAMP(fl, FILENAME_BUF);
    CLAMP(al, ARGS_BUF);
    CLAMP(cl, CWD_BUF);
    return sizeof(struct exec_event) + fl + al + cl;
}

#ifdef OFF_MOUNT_MNT
/* The working directory as the process sees it, walked as the kernel's d_path
 * walks it: task->fs->pwd up the dentries to the process's root, crossing each
 * mount root to its mount point in the parent mount, up to CWD_COMPONENTS names
 * and CWD_BYTES bytes. Names are stored leaf first, each NUL-terminated (a name
 * holds any byte but '/' and NUL): user space puts them in order. At syscall
 * entry, since an exec keeps the working directory and the process may be gone
 * a millisecond after. */
static __always_inline void walk_cwd(struct exec_buf *b, struct task_struct *task)
{
    void *fs = NULL, *nsp = NULL, *ns = NULL;
    void *dentry = NULL, *vfsmnt = NULL, *root_d = NULL, *root_m = NULL;
    void *rr = NULL, *pprev = NULL, *up = NULL;
    u32 inum = 0;

    b->e.cwd_len = 0;
    b->cwd_off = 0;
    b->cwd_flags = FLAG_NO_CWD;
    READ_AT(nsp, task, OFF_TASK_NSPROXY);
    if (nsp)
        READ_AT(ns, nsp, OFF_NSPROXY_MNT_NS);
    if (ns)
        READ_AT(inum, ns, OFF_MNT_NS_INUM);
    b->e.mntns = inum;
    READ_AT(fs, task, OFF_TASK_FS);
    if (!fs)
        return;
    READ_AT(dentry, fs, OFF_FS_PWD_DENTRY);
    READ_AT(vfsmnt, fs, OFF_FS_PWD_MNT);
    READ_AT(root_d, fs, OFF_FS_ROOT_DENTRY);
    READ_AT(root_m, fs, OFF_FS_ROOT_MNT);
    if (!dentry || !vfsmnt || !root_m)
        return;
    b->cwd_flags = 0;
    /* d_unlinked(): unhashed and not the root of its filesystem */
    READ_AT(pprev, dentry, OFF_DENTRY_HASH_PPREV);
    READ_AT(up, dentry, OFF_DENTRY_PARENT);
    if (!pprev && up != dentry)
        b->cwd_flags |= FLAG_CWD_DELETED;
    /* chroot: the root is a directory inside a mount, not a mount's root. Not
     * "the root of the namespace's first mount": booted through an initramfs,
     * every process's / is a mount moved over rootfs and then chroot'ed into
     * (switch_root, run-init), so that would flag them all. A chroot into a
     * mount point is not told apart; a container has a namespace of its own
     * (mntns, other_ns) */
    READ_AT(rr, root_m, OFF_VFSMOUNT_MNT_ROOT);
    if (root_d != rr)
        b->cwd_flags |= FLAG_CWD_CHROOT;

    for (int i = 0; i < CWD_COMPONENTS; i++) {
        if (dentry == root_d && vfsmnt == root_m)
            goto out;
        void *mnt_root = NULL;
        READ_AT(mnt_root, vfsmnt, OFF_VFSMOUNT_MNT_ROOT);
        if (dentry == mnt_root) {
            void *mnt = (char *)vfsmnt - OFF_MOUNT_MNT, *parent = NULL;
            READ_AT(parent, mnt, OFF_MOUNT_PARENT);
            if (!parent || parent == mnt)
                goto out; /* the namespace's root mount: outside the chroot, if any */
            READ_AT(dentry, mnt, OFF_MOUNT_MOUNTPOINT);
            vfsmnt = (char *)parent + OFF_MOUNT_MNT;
            continue;
        }
        u64 off = b->cwd_off;
        if (off >= CWD_BYTES) {
            b->cwd_flags |= FLAG_CWD_TRUNCATED;
            goto out;
        }
        u64 room = CWD_BYTES - off;
        CLAMP(off, CWD_BUF);
        CLAMP(room, CWD_BUF);
        const char *name = NULL;
        u32 len = 0;
        READ_AT(name, dentry, OFF_DENTRY_NAME);
        READ_AT(len, dentry, OFF_DENTRY_NAME_LEN);
        if (len + 1 > room) {
            b->cwd_flags |= FLAG_CWD_TRUNCATED;
            goto out;
        }
        long n = bpf_probe_read_kernel_str(&b->cwd[off], room, name);
        if (n <= 0) {
            b->cwd_flags |= FLAG_CWD_TRUNCATED;
            goto out;
        }
        b->cwd_off = off + n;
        up = NULL;
        READ_AT(up, dentry, OFF_DENTRY_PARENT);
        if (!up || up == dentry)
            goto out; /* a filesystem's root that is no mount's root: detached */
        dentry = up;
    }
    /* names left when the bound ran out */
    b->cwd_flags |= FLAG_CWD_TRUNCATED;
out:
    {
        u64 total = b->cwd_off;
        CLAMP(total, CWD_BYTES);
        b->e.cwd_len = total;
    }
}
#else
/* no BTF (header layouts: struct mount is not in the headers): no walk */
static __always_inline void walk_cwd(struct exec_buf *b, struct task_struct *task)
{
    b->e.cwd_len = 0;
    b->e.mntns = 0;
    b->cwd_flags = FLAG_NO_CWD;
}
#endif

/* no file's identity: a failed exec ran none, and without BTF none is read */
static __always_inline void clear_exe(struct exec_event *e)
{
    e->exe_dev = 0;
    e->_pad = 0;
    e->exe_ino = e->exe_size = e->exe_mtime_ns = e->exe_ctime_ns = 0;
}

#ifdef OFF_BPRM_FILE
/* a time of the inode in ns: seconds, and nanoseconds of NSEC_BYTES (u32 since 6.11, whose
 * ctime keeps a flag in bit 31 since 6.13: masked, nanoseconds need 30 bits) */
#define INODE_TIME_NS(inode, T)                                               \
    ({                                                                        \
        s64 sec_ = 0;                                                         \
        u64 nsec_ = 0;                                                        \
        READ_AT(sec_, inode, OFF_INODE_##T##_SEC);                            \
        bpf_probe_read_kernel(&nsec_, T##_NSEC_BYTES,                         \
                              (const char *)(inode) + OFF_INODE_##T##_NSEC);  \
        (u64)sec_ * 1000000000ULL + (nsec_ & 0x3fffffff);                     \
    })

/* The file exec ran (bprm->file: for a #! script, the interpreter), as stat would name it: what
 * user space then hashes is held to it. FLAG_EXE_ID when read. */
static __always_inline u32 exe_identity(struct exec_event *e, const void *bprm)
{
    void *file = NULL, *inode = NULL, *sb = NULL;
    clear_exe(e);
    READ_AT(file, bprm, OFF_BPRM_FILE);
    if (file)
        READ_AT(inode, file, OFF_FILE_INODE);
    if (!inode)
        return 0;
    READ_AT(sb, inode, OFF_INODE_SB);
    if (sb)
        READ_AT(e->exe_dev, sb, OFF_SB_DEV);
    READ_AT(e->exe_ino, inode, OFF_INODE_INO);
    READ_AT(e->exe_size, inode, OFF_INODE_SIZE);
    e->exe_mtime_ns = INODE_TIME_NS(inode, MTIME);
    e->exe_ctime_ns = INODE_TIME_NS(inode, CTIME);
    return FLAG_EXE_ID;
}
#else
static __always_inline u32 exe_identity(struct exec_event *e, const void *bprm)
{
    clear_exe(e);
    return 0;
}
#endif

/* the entry's working directory into the record's data[], after its arguments */
static __always_inline u32 copy_cwd(struct exec_buf *b, const struct exec_buf *st, u64 at)
{
    u64 cl = st ? st->e.cwd_len : 0;
    CLAMP(cl, CWD_BUF);
    CLAMP(at, FILENAME_BUF + ARGS_BUF);
    b->e.cwd_len = 0;
    if (!st)
        return FLAG_NO_CWD;
    b->e.mntns = st->e.mntns;
    if (cl > 0) {
        if (bpf_probe_read_kernel(&b->data[at], cl, st->cwd) != 0)
            return FLAG_NO_CWD;
        b->e.cwd_len = cl;
    }
    return st->cwd_flags;
}

/* argv[i]: a pointer of the caller's ABI (8 bytes, or 4 for ia32 and x32, whose argv is an
 * array of compat_uptr_t). ``compat`` is a constant in every caller: each inlined copy reads
 * one width only. */
static __always_inline const char *argv_at(const void *argv, int i, int compat)
{
    if (compat) {
        u32 p = 0;
        bpf_probe_read_user(&p, sizeof(p), (const u32 *)argv + i);
        return (const char *)(unsigned long)p;
    }
    const char *p = NULL;
    bpf_probe_read_user(&p, sizeof(p), (const char *const *)argv + i);
    return p;
}

/* syscall entry: copy filename and argv while the caller's memory is intact */
static __always_inline int stash_entry(const char *filename, const void *argv, u32 abi, int compat)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 zero = 0;
    struct exec_buf *b = scratch.lookup(&zero);
    if (!b)
        return 0;
    /* first: its states end in map memory, so the argument loop after it is
     * verified once, not once per way the walk ended */
    walk_cwd(b, (struct task_struct *)bpf_get_current_task());

    /* What the branches before and in the argument loop decide goes to map memory (b->e), as
     * the walk's state does: a register holding it would be live through the loop, and every
     * value it could have would be one more copy of the loop for the verifier to follow. */
    long n = bpf_probe_read_user_str(b->data, FILENAME_BUF, filename);
    b->e.flags = n >= FILENAME_BUF ? FLAG_FILENAME_TRUNCATED : 0;
    b->e.filename_len = n > 0 ? n : 0;
    u64 fl = b->e.filename_len;
    CLAMP(fl, FILENAME_BUF);

    /* Every branch in the loop leaves it but the one path that copies an argument: the
     * verifier then follows one state per iteration. Branches that stayed in the loop (the
     * last byte of an argument that filled the room, read there) multiplied its states by about
     * forty an iteration: 170,000 instructions processed per copy of the loop, which times six
     * fentry programs outlasted the unit's start timeout under TCG. */
    u64 off = 0;
    u32 argc = 0;
    b->e.argc = 0;
    b->e.args_len = 0;
    for (int i = 0; i < MAX_ARGS; i++) {
        const char *p = argv_at(argv, i, compat);
        if (!p)
            goto done;
        if (off >= ARG_BYTES) {
            b->e.flags |= FLAG_ARGS_TRUNCATED;
            goto done;
        }
        u64 room = ARG_BYTES - off;
        u64 at = fl + off;
        CLAMP(at, FILENAME_BUF + ARGS_BUF);
        CLAMP(room, ARGS_BUF);
        n = bpf_probe_read_user_str(&b->data[at], room, p);
        if (n <= 0)
            goto done;
        off += n;
        b->e.argc = ++argc;
        b->e.args_len = off;
        if ((u32)n == room) {
            b->edge_last = (u64)(p + n - 1);
            b->edge_next = i + 1;
            goto filled;
        }
    }
    if (argv_at(argv, MAX_ARGS, compat))
        b->e.flags |= FLAG_ARGC_TRUNCATED;
    goto done;
filled:
    /* the argument filled the room exactly: truncated unless the string ended there; and an
     * argument after it did not fit at all */
    {
        char last = 0;
        bpf_probe_read_user(&last, 1, (const char *)b->edge_last);
        if (last || argv_at(argv, b->edge_next, compat))
            b->e.flags |= FLAG_ARGS_TRUNCATED;
    }
done:
    /* only map memory and registers every path holds alike are read from here on: the
     * verifier meets each exit's state here once */
    b->e.abi = abi;
    stash.update(&tid, b);
    return 0;
}

/* a failed execve/execveat: its attempt, with the entry copy when there is one */
static __always_inline int exec_failed(void *ctx, long ret, u32 abi)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct exec_buf *b = stash.lookup(&tid);
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();

    if (!b) {
        /* the entry copy was evicted: still report the attempt */
        u32 zero = 0;
        b = scratch.lookup(&zero);
        if (!b)
            return 0;
        b->e.argc = 0;
        b->e.flags = FLAG_NO_STASH;
        b->e.filename_len = 0;
        b->e.args_len = 0;
        b->e.cwd_len = 0;
        b->e.mntns = 0;
        b->e.flags |= FLAG_NO_CWD;
        count(CNT_STASH_MISS);
    } else {
        u64 fl = b->e.filename_len, al = b->e.args_len;
        CLAMP(fl, FILENAME_BUF);
        CLAMP(al, ARGS_BUF);
        b->e.flags |= copy_cwd(b, b, fl + al);
    }
    fill_hdr(&b->e.h, EV_EXEC_FAILED, task);
    fill_creds(&b->e, task);
    b->e.old_pid = b->e.h.tid;
    b->e.err = -ret;
    b->e.abi = abi;
    clear_exe(&b->e);
    emit(ctx, b, record_size(&b->e));
    stash.delete(&tid);
    return 0;
}

#ifdef USE_FENTRY
/* fentry/fexit on each execve function (FN_* from the loader: the names this kernel's BTF has).
 * Each is the syscall's wrapper, called with the caller's saved registers: x64 and x32 pass
 * arguments in di, si, dx; ia32 in bx, cx, dx. Only calls of execve run these.
 * The names are macros: expanded here, before bcc's KFUNC_PROBE pastes them into kfunc__<name>,
 * which is how bcc finds the function's BTF id at load. */
#define ON_ENTRY(fn) KFUNC_PROBE(fn, const void *regs)
#define ON_EXIT(fn) KRETFUNC_PROBE(fn, const void *regs, long ret)

#ifdef OFF_TASK_STACK
/* The caller's saved registers where a wrapper's own argument cannot be read: 5.10's BTF
 * gives __x64_sys_execveat's pt_regs as a forward declaration, and the verifier refuses any
 * read of it. They are task_pt_regs(): the top of the task's stack, less the registers
 * (x86_64: THREAD_SIZE 16 KiB, no padding before FRED). The number the call was made with
 * must be the one expected, else the layout is not this one and nothing is read. */
static __always_inline const void *task_regs(long nr)
{
    void *stack = NULL;
    long orig = -1;
    READ_AT(stack, (void *)bpf_get_current_task(), OFF_TASK_STACK);
    if (!stack)
        return NULL;
    const void *regs = (const char *)stack + TASK_STACK_SIZE - SIZEOF_PT_REGS;
    READ_AT(orig, regs, OFF_REGS_ORIG_AX);
    return orig == nr ? regs : NULL;
}
#endif

#define STASH_FROM(regs, abi, compat, FILE_REG, ARGV_REG)                    \
    ({                                                                       \
        u64 f = 0, a = 0;                                                    \
        READ_AT(f, regs, FILE_REG);                                          \
        READ_AT(a, regs, ARGV_REG);                                          \
        if (compat) {                                                        \
            f = (u32)f;                                                      \
            a = (u32)a;                                                      \
        }                                                                    \
        stash_entry((const char *)f, (const void *)a, abi, compat);          \
    })
#define EXEC_EXIT(fn, abi)                                                   \
    ON_EXIT(fn)                                                              \
    {                                                                        \
        return ret < 0 ? exec_failed(ctx, ret, abi) : 0;                     \
    }
#define EXEC_PAIR(fn, abi, compat, FILE_REG, ARGV_REG)                       \
    ON_ENTRY(fn)                                                             \
    {                                                                        \
        return STASH_FROM(regs, abi, compat, FILE_REG, ARGV_REG);            \
    }                                                                        \
    EXEC_EXIT(fn, abi)
/* the same, for a function whose argument the verifier cannot read (task_regs) */
#define EXEC_PAIR_TASK_REGS(fn, nr, abi, compat, FILE_REG, ARGV_REG)         \
    ON_ENTRY(fn)                                                             \
    {                                                                        \
        const void *r = task_regs(nr);                                       \
        if (!r) {                                                            \
            count(CNT_STASH_MISS);                                           \
            return 0;                                                        \
        }                                                                    \
        return STASH_FROM(r, abi, compat, FILE_REG, ARGV_REG);               \
    }                                                                        \
    EXEC_EXIT(fn, abi)

/* execve(filename, argv, envp); execveat(dirfd, filename, argv, envp, flags) */
#ifdef FN_X64_EXECVE_TASK_REGS
EXEC_PAIR_TASK_REGS(FN_X64_EXECVE, NR_EXECVE, ABI_X64, 0, OFF_REGS_DI, OFF_REGS_SI)
#else
EXEC_PAIR(FN_X64_EXECVE, ABI_X64, 0, OFF_REGS_DI, OFF_REGS_SI)
#endif
#ifdef FN_X64_EXECVEAT_TASK_REGS
EXEC_PAIR_TASK_REGS(FN_X64_EXECVEAT, NR_EXECVEAT, ABI_X64, 0, OFF_REGS_SI, OFF_REGS_DX)
#else
EXEC_PAIR(FN_X64_EXECVEAT, ABI_X64, 0, OFF_REGS_SI, OFF_REGS_DX)
#endif
#ifdef FN_IA32_EXECVE
EXEC_PAIR(FN_IA32_EXECVE, ABI_IA32, 1, OFF_REGS_BX, OFF_REGS_CX)
EXEC_PAIR(FN_IA32_EXECVEAT, ABI_IA32, 1, OFF_REGS_CX, OFF_REGS_DX)
#endif
#ifdef FN_X32_EXECVE
EXEC_PAIR(FN_X32_EXECVE, ABI_X32, 1, OFF_REGS_DI, OFF_REGS_SI)
EXEC_PAIR(FN_X32_EXECVEAT, ABI_X32, 1, OFF_REGS_SI, OFF_REGS_DX)
#endif

#else /* the fallback: compiled only when it is the mode loaded (clang's time under TCG) */

/* The fallback: raw_syscalls, on every system call of the machine, so the number test comes
 * first. A 32-bit call (TS_COMPAT) numbers from the i386 table; an x32 call has its bit set. */
static __always_inline u32 syscall_abi(long nr)
{
    if (nr == NR_EXECVE || nr == NR_EXECVEAT || nr == NR_IA32_EXECVE || nr == NR_IA32_EXECVEAT) {
        u32 status = 0;
        READ_AT(status, (void *)bpf_get_current_task(), OFF_TASK_TI_STATUS);
        if (status & TS_COMPAT)
            return nr == NR_IA32_EXECVE || nr == NR_IA32_EXECVEAT ? ABI_IA32 : ABI_UNKNOWN;
        return nr == NR_EXECVE || nr == NR_EXECVEAT ? ABI_X64 : ABI_UNKNOWN;
    }
    if (nr == NR_X32_EXECVE || nr == NR_X32_EXECVEAT)
        return ABI_X32;
    return ABI_UNKNOWN;
}

PROBE(sys_enter)
{
    long nr = (long)ctx->args[1];
    if (nr != NR_EXECVE && nr != NR_EXECVEAT && nr != NR_IA32_EXECVE && nr != NR_IA32_EXECVEAT &&
        nr != NR_X32_EXECVE && nr != NR_X32_EXECVEAT)
        return 0;
    u32 abi = syscall_abi(nr);
    const void *regs = (const void *)ctx->args[0];
    u64 f = 0, a = 0;
    if (abi == ABI_X64) {
        if (nr == NR_EXECVE) {
            READ_AT(f, regs, OFF_REGS_DI);
            READ_AT(a, regs, OFF_REGS_SI);
        } else {
            READ_AT(f, regs, OFF_REGS_SI);
            READ_AT(a, regs, OFF_REGS_DX);
        }
        return stash_entry((const char *)f, (const void *)a, ABI_X64, 0);
    }
    if (abi == ABI_IA32) {
        if (nr == NR_IA32_EXECVE) {
            READ_AT(f, regs, OFF_REGS_BX);
            READ_AT(a, regs, OFF_REGS_CX);
        } else {
            READ_AT(f, regs, OFF_REGS_CX);
            READ_AT(a, regs, OFF_REGS_DX);
        }
    } else if (abi == ABI_X32) {
        if (nr == NR_X32_EXECVE) {
            READ_AT(f, regs, OFF_REGS_DI);
            READ_AT(a, regs, OFF_REGS_SI);
        } else {
            READ_AT(f, regs, OFF_REGS_SI);
            READ_AT(a, regs, OFF_REGS_DX);
        }
    } else {
        return 0; /* a native call whose number is i386's execve, or the reverse */
    }
    /* one copy of the compat loop for both 32-bit ABIs */
    return stash_entry((const char *)(u64)(u32)f, (const void *)(u64)(u32)a, abi, 1);
}

/* also on every system call: a successful exec has nothing left to do here
 * (sched_process_exec took its entry copy), so only failures read further */
PROBE(sys_exit)
{
    long ret = (long)ctx->args[1];
    if (ret >= 0)
        return 0;
    const void *regs = (const void *)ctx->args[0];
    long nr = -1;
    READ_AT(nr, regs, OFF_REGS_ORIG_AX);
    u32 abi = syscall_abi(nr);
    if (abi == ABI_UNKNOWN)
        return 0;
    return exec_failed(ctx, ret, abi);
}

#endif /* USE_FENTRY */

/* (struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm) */
PROBE(sched_process_exec)
{
    u32 old_tid = (u32)ctx->args[1];
    struct exec_buf *st = stash.lookup(&old_tid);
#if MIN_DURATION_NS > 0
    /* with a minimum duration no successful exec is reported (libbpf
     * bootstrap); failed execs still are, from sys_exit */
    if (st)
        stash.delete(&old_tid);
    return 0;
#endif
    u32 zero = 0;
    struct exec_buf *b = scratch.lookup(&zero);
    if (!b)
        goto out;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();

    fill_hdr(&b->e.h, EV_EXEC, task);
    fill_creds(&b->e, task);
    b->e.old_pid = old_tid;
    b->e.err = 0;

    u32 flags = 0;
    const char *fname = NULL;
    READ_AT(fname, (const void *)ctx->args[2], OFF_BPRM_FILENAME);
    long n = bpf_probe_read_kernel_str(b->data, FILENAME_BUF, fname);
    u64 fl = n > 0 ? n : 0;
    if (fl >= FILENAME_BUF)
        flags |= FLAG_FILENAME_TRUNCATED;
    CLAMP(fl, FILENAME_BUF);

    /* argv from the new image: already copied in by the kernel, whole */
    void *mm = NULL;
    u64 arg_start = 0, arg_end = 0;
    READ_AT(mm, task, OFF_TASK_MM);
    if (mm) {
        READ_AT(arg_start, mm, OFF_MM_ARG_START);
        READ_AT(arg_end, mm, OFF_MM_ARG_END);
    }
    u64 len = arg_end - arg_start;
    if (arg_end < arg_start)
        len = 0;
    if (len > ARG_BYTES) {
        len = ARG_BYTES;
        flags |= FLAG_ARGS_TRUNCATED;
    }
    u64 al = len;
    CLAMP(al, ARGS_BUF);
    long rc = -1;
    if (al > 0)
        rc = bpf_probe_read_user(&b->data[fl], al, (const void *)arg_start);
    if (rc < 0) {
        al = 0;
        if (st) {
            /* the mm read faulted: fall back to the syscall-entry copy */
            u64 sfl = st->e.filename_len;
            u64 sal = st->e.args_len;
            CLAMP(sfl, FILENAME_BUF);
            CLAMP(sal, ARGS_BUF);
            if (sal > 0 &&
                bpf_probe_read_kernel(&b->data[fl], sal, &st->data[sfl]) == 0) {
                al = sal;
                flags |= FLAG_ARGV_FROM_STASH | (st->e.flags & FLAG_ARGS_TRUNCATED);
            }
        }
    }
    b->e.argc = st ? st->e.argc : 0;
    b->e.abi = st ? st->e.abi : ABI_UNKNOWN;
    if (st)
        flags |= st->e.flags & FLAG_ARGC_TRUNCATED;
    else
        flags |= FLAG_NO_STASH;
    flags |= copy_cwd(b, st, fl + al);
    flags |= exe_identity(&b->e, (const void *)ctx->args[2]);
    b->e.flags = flags;
    b->e.filename_len = fl;
    b->e.args_len = al;
    emit(ctx, b, record_size(&b->e));
out:
    if (st)
        stash.delete(&old_tid);
    return 0;
}

/* The wait status the parent will see, as wait_task_zombie() computes it
 * from the group leader: the group's exit code while SIGNAL_GROUP_EXIT is
 * set, else the leader's own exit_code. Since 6.0 the last thread to enter
 * do_exit sets SIGNAL_GROUP_EXIT with its code (synchronize_group_exit), so
 * after the leader's pthread_exit the parent sees the last thread's code;
 * on 5.10 it sees the leader's (0). Every thread has passed that point once
 * signal->live is 0, so the exit record says what wait will say. */
static __always_inline u32 wait_status(struct task_struct *task)
{
    void *sig = NULL, *leader = NULL;
    u32 flags = 0;
    int code = 0;
    READ_AT(sig, task, OFF_TASK_SIGNAL);
    if (sig)
        READ_AT(flags, sig, OFF_SIGNAL_FLAGS);
    if (sig && (flags & SIGNAL_GROUP_EXIT)) {
        READ_AT(code, sig, OFF_SIGNAL_GROUP_EXIT_CODE);
        return code;
    }
    READ_AT(leader, task, OFF_TASK_GROUP_LEADER);
    READ_AT(code, leader ? leader : (void *)task, OFF_TASK_EXIT_CODE);
    return code;
}

/* (struct task_struct *p) or, since it has group_dead, (p, bool group_dead) */
PROBE(sched_process_exit)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    stash.delete(&tid);

    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
#if HAVE_GROUP_DEAD
    if (!(u8)ctx->args[1])
        return 0;
#else
    {
        void *sig = NULL;
        int live = 1;
        READ_AT(sig, task, OFF_TASK_SIGNAL);
        if (sig)
            READ_AT(live, sig, OFF_SIGNAL_LIVE);
        if (live != 0)
            return 0;
    }
#endif
    struct exit_event ev = {};
    fill_hdr(&ev.h, EV_EXIT, task);
#if !HAVE_GROUP_DEAD
    {
        struct exit_claim key = {.tgid = ev.h.pid, .start_ns = ev.h.start_ns};
        u8 one = 1;
        if (exit_claims.insert(&key, &one) != 0)
            return 0;
    }
#endif
    ev.duration_ns = ev.h.ts_ns - ev.h.start_ns;
#if MIN_DURATION_NS > 0
    if (ev.duration_ns < MIN_DURATION_NS)
        return 0;
#endif
    ev.status = wait_status(task);
#ifdef USE_PERFBUF
    if (events.perf_submit(ctx, &ev, sizeof(ev)) < 0)
        count(CNT_LOST);
#else
    struct exit_event *r = events.ringbuf_reserve(sizeof(struct exit_event));
    if (!r) {
        count(CNT_LOST);
        return 0;
    }
    __builtin_memcpy(r, &ev, sizeof(ev));
    events.ringbuf_submit(r, wake_flags());
#endif
    return 0;
}

#if !HAVE_GROUP_DEAD
/* (struct task_struct *p): the task's last reference is gone */
PROBE(sched_process_free)
{
    const void *p = (const void *)ctx->args[0];
    u32 pid = 0, tgid = 0;
    READ_AT(pid, p, OFF_TASK_PID);
    READ_AT(tgid, p, OFF_TASK_TGID);
    if (pid != tgid)
        return 0;
    struct exit_claim key = {.tgid = tgid};
    READ_AT(key.start_ns, p, OFF_TASK_START_TIME);
    exit_claims.delete(&key);
    return 0;
}
#endif
