/* Calls execve or execveat through the 32-bit gate, int $0x80 (i386 numbers 11 and 358), from
 * this 64-bit program or, built with -m32, from an i386 one: the classic way around audit rules
 * that list only arch=b64; or, 64-bit build only, through the x32 ABI (the syscall instruction
 * with __X32_SYSCALL_BIT: 520 and 545, 32-bit pointers). A successful call does not return; a
 * failed one prints "gate32 returned <value>" (the negative errno the kernel gave) and exits 0.
 *
 *   gate32 execve|execveat|x32-execve|x32-execveat PATH [ARG...]   argv of the new program:
 *                                                                   PATH ARG...
 *
 * No libc: one source for both builds (the i386 one is static and freestanding, because the
 * machine may have no 32-bit libc). The 32-bit gate takes 32-bit pointers, so in the 64-bit
 * build the path and argv are copied below 4 GiB first (MAP_32BIT). */

typedef unsigned long size_t;
typedef unsigned int u32;

#ifdef __x86_64__
static long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#define NATIVE_WRITE 1
#define NATIVE_EXIT 60
#define NATIVE_MMAP 9
#endif

/* i386: execve 11, execveat 358, write 4, exit 1 */
static long int80(long nr, long b, long c, long d, long s, long di)
{
    long ret;
#ifdef __x86_64__
    /* only the low 32 bits of each register reach a 32-bit call */
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(b), "c"(c), "d"(d), "S"(s), "D"(di)
                     : "r8", "r9", "r10", "r11", "memory");
#else
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(b), "c"(c), "d"(d), "S"(s), "D"(di)
                     : "memory");
#endif
    return ret;
}

static size_t len(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static void out(const char *s)
{
#ifdef __x86_64__
    sys6(NATIVE_WRITE, 1, (long)s, len(s), 0, 0, 0);
#else
    int80(4, 1, (long)s, len(s), 0, 0);
#endif
}

static void leave(int code)
{
#ifdef __x86_64__
    sys6(NATIVE_EXIT, code, 0, 0, 0, 0, 0);
#else
    int80(1, code, 0, 0, 0, 0);
#endif
    for (;;)
        ;
}

static int equal(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static void run(int argc, char **argv)
{
    if (argc < 3) {
        out("usage: gate32 execve|execveat PATH [ARG...]\n");
        leave(2);
    }
    int at = equal(argv[1], "execveat") || equal(argv[1], "x32-execveat");
    int x32 = equal(argv[1], "x32-execve") || equal(argv[1], "x32-execveat");
    /* the new program's argv: PATH ARG..., as 32-bit pointers, and its strings, below 4 GiB */
    char *area;
#ifdef __x86_64__
    /* PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_32BIT */
    area = (char *)sys6(NATIVE_MMAP, 0, 1 << 20, 3, 0x02 | 0x20 | 0x40, -1, 0);
    if ((long)area < 0) {
        out("gate32: mmap failed\n");
        leave(3);
    }
#else
    static char buf[1 << 20];
    area = buf;
#endif
    u32 *vec = (u32 *)area;
    char *p = area + 4096;
    int n = 0;
    for (int i = 2; i < argc && n < 1000; i++, n++) {
        vec[n] = (u32)(unsigned long)p;
        for (const char *s = argv[i]; (*p++ = *s++);)
            ;
    }
    vec[n] = 0;
    long ret;
#ifdef __x86_64__
    if (x32) /* the same calls through the x32 ABI: execve 520, execveat 545 */
        ret = at ? sys6(0x40000000 | 545, -100, vec[0], (long)(unsigned long)vec, 0, 0, 0)
                 : sys6(0x40000000 | 520, vec[0], (long)(unsigned long)vec, 0, 0, 0, 0);
    else
#else
    if (x32) {
        out("gate32: x32 is a 64-bit build's gate\n");
        leave(2);
    }
#endif
    if (at) /* execveat(AT_FDCWD, path, argv, envp, 0) */
        ret = int80(358, -100, vec[0], (long)(unsigned long)vec, 0, 0);
    else
        ret = int80(11, vec[0], (long)(unsigned long)vec, 0, 0, 0);
    char num[24], *q = num + sizeof(num) - 1;
    int neg = ret < 0;
    unsigned long v = neg ? -ret : ret;
    *q = 0;
    do {
        *--q = '0' + v % 10;
        v /= 10;
    } while (v);
    if (neg)
        *--q = '-';
    out("gate32 returned ");
    out(q);
    out("\n");
    leave(0);
}

/* the kernel's initial stack: argc, then argv */
#ifdef __x86_64__
__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call start_c\n");
void start_c(long *sp) { run((int)sp[0], (char **)(sp + 1)); }
#else
__asm__(".globl _start\n_start:\n mov %esp, %eax\n and $-16, %esp\n push %eax\n push %eax\n call start_c\n");
void __attribute__((regparm(0))) start_c(long *unused, long *sp) { run((int)sp[0], (char **)(sp + 1)); }
#endif
