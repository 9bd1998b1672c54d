/* The record layout shared by the BPF program and the Python decoder
 * (auditd_lite/capture/records.py). Every field is naturally aligned so the layout
 * is the same with or without packing; tests/test_contract.py checks the
 * Python side against this file.
 */
#ifndef AUDITD_LITE_H
#define AUDITD_LITE_H

#define EV_EXEC 1
#define EV_EXEC_FAILED 2
#define EV_EXIT 3

/* exec_event.flags */
#define FLAG_ARGS_TRUNCATED 1     /* more argument bytes than ARG_BYTES */
#define FLAG_ARGC_TRUNCATED 2     /* more arguments than MAX_ARGS */
#define FLAG_FILENAME_TRUNCATED 4 /* filename longer than FILENAME_BYTES */
#define FLAG_ARGV_FROM_STASH 8    /* mm read failed; argv is the syscall-entry copy */
#define FLAG_NO_STASH 16          /* entry copy missing (evicted): filename/argv unknown */
#define FLAG_NO_CWD 32            /* working directory not read (no entry copy, no fs) */
#define FLAG_CWD_TRUNCATED 64     /* more components or bytes than the walk's bounds */
#define FLAG_CWD_DELETED 128      /* the directory was removed (d_unlinked) */
#define FLAG_CWD_CHROOT 256       /* the process's root is a directory, not a mount's root */
#define FLAG_EXE_ID 512           /* exe_* hold the executed file's identity (an exec only) */

/* counters map indexes */
#define CNT_LOST 0        /* ring/perf buffer full: record dropped */
#define CNT_STASH_MISS 1  /* failed exec whose entry copy was gone */
#define CNT_MAX 2

/* exec_event.abi: the system call gate an exec came through */
#define ABI_UNKNOWN 0     /* no entry copy: the gate was not seen */
#define ABI_X64 1         /* the 64-bit syscall instruction */
#define ABI_IA32 2        /* the 32-bit gates: int $0x80, sysenter, syscall from 32-bit code */
#define ABI_X32 3         /* the x32 ABI: 64-bit instruction, 32-bit pointers */

#define COMM_LEN 16

struct event_hdr {
    __u32 type;
    __u32 pid;      /* tgid: the process id */
    __u32 tid;
    __u32 ppid;     /* real_parent->tgid */
    __u64 ts_ns;    /* bpf_ktime_get_ns() */
    __u64 start_ns; /* group leader's task->start_time */
    __u64 pstart_ns; /* real_parent's group leader's start_time: the parent's identity */
    __u32 uid;
    __u32 gid;
    char comm[COMM_LEN];
};

struct exit_event {
    struct event_hdr h;
    __u64 duration_ns;
    __u32 status;   /* wait status: code << 8 | core 0x80 | signal */
    __u32 _pad;
};

struct exec_event {
    struct event_hdr h;
    __u64 cgroup_id;
    __u32 euid;
    __u32 auid;
    __u32 sessionid;
    __s32 old_pid;
    __s32 err;      /* errno of a failed exec, 0 otherwise */
    __u32 argc;     /* arguments counted at syscall entry (at most MAX_ARGS) */
    __u32 flags;
    __u16 filename_len; /* bytes of data[] holding the filename, with its NUL */
    __u16 args_len;     /* bytes of data[] after it: NUL-terminated arguments */
    __u16 cwd_len;      /* bytes of data[] after those: the working directory's names,
                         * each NUL-terminated, from the directory itself up to the root */
    __u16 abi;          /* ABI_* */
    __u32 mntns;        /* inode number of the process's mount namespace */
    /* the executed file as the kernel named it (bprm->file->f_inode) when FLAG_EXE_ID: what
     * user space hashes must be this inode (auditd_lite/capture/exehash.py) */
    __u32 exe_dev;      /* the kernel's dev_t: major << 20 | minor */
    __u32 _pad;
    __u64 exe_ino;
    __u64 exe_size;
    __u64 exe_mtime_ns;
    __u64 exe_ctime_ns;
    /* char data[filename_len + args_len + cwd_len] follows */
};

#endif
