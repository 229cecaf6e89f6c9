#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scfm/core.h"

scfm_status scfm_make_dirs(const char *path, scfm_error *err) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return scfm_fail(err, SCFM_ERR_ARG, "invalid directory path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return scfm_fail(err, SCFM_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return scfm_fail(err, SCFM_ERR_IO, "%s: exists and is not a directory", path);
    return SCFM_OK;
}

scfm_status scfm_path_join(char *out, size_t cap, const char *dir, const char *name, scfm_error *err) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) return scfm_fail(err, SCFM_ERR_ARG, "path too long: %s/%s", dir, name);
    return SCFM_OK;
}

scfm_status scfm_fsync_path(const char *path, scfm_error *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open to sync: %s", path, strerror(errno));
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: fsync failed: %s", path, strerror(saved));
    return SCFM_OK;
}

scfm_status scfm_remove_dir(const char *path, scfm_error *err) {
    DIR *d = opendir(path);
    if (!d) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct dirent *e;
    char file[4096];
    scfm_status st = SCFM_OK;
    while (st == SCFM_OK && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        st = scfm_path_join(file, sizeof file, path, e->d_name, err);
        if (st == SCFM_OK && remove(file) != 0)
            st = scfm_fail(err, SCFM_ERR_IO, "%s: cannot remove: %s", file, strerror(errno));
    }
    closedir(d);
    if (st == SCFM_OK && rmdir(path) != 0)
        st = scfm_fail(err, SCFM_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    return st;
}

scfm_status scfm_fsync_parent(const char *path, scfm_error *err) {
    char parent[4096];
    if (snprintf(parent, sizeof parent, "%s", path) >= (int)sizeof parent)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: path too long", path);
    char *slash = strrchr(parent, '/');
    if (slash == parent) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(parent, sizeof parent, ".");
    return scfm_fsync_path(parent, err);
}

scfm_status scfm_copy_file(const char *from, const char *to, scfm_error *err) {
    FILE *in = fopen(from, "rb");
    if (!in) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    scfm_status st = out ? SCFM_OK : scfm_fail(err, SCFM_ERR_IO, "%s: cannot create: %s", to, strerror(errno));
    char buf[1 << 16];
    size_t n;
    while (st == SCFM_OK && (n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) st = scfm_fail(err, SCFM_ERR_IO, "%s: write failed: %s", to, strerror(errno));
    if (st == SCFM_OK && ferror(in)) st = scfm_fail(err, SCFM_ERR_IO, "%s: read error", from);
    fclose(in);
    if (out && fclose(out) != 0 && st == SCFM_OK) st = scfm_fail(err, SCFM_ERR_IO, "%s: write failed", to);
    if (st == SCFM_OK) st = scfm_fsync_path(to, err);
    return st;
}
