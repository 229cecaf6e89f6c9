/* Compares the tensors of two safetensors files of the same layout:
 *   compare_weights A B TOLERANCE [SKIP]
 * prints the largest relative difference ||a - b|| / ||a|| (L2, per tensor)
 * and exits 1 when it is above TOLERANCE (0: the files must hold identical
 * values). Tensors whose
 * name contains SKIP are left out: the attention key bias, for one, has an
 * exactly zero gradient (softmax ignores a shift shared by all keys), so what
 * reaches it is rounding noise that Adam scales up to full-size steps, and
 * two runs that sum the same gradients in another order disagree there. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/io.h"

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: compare_weights A B TOLERANCE [SKIP]\n");
        return 2;
    }
    double tolerance = atof(argv[3]), worst = 0.0;
    const char *worst_name = "";
    scfm_safetensors *a = NULL, *b = NULL;
    scfm_error err = {0};
    if (scfm_safetensors_open(argv[1], &a, &err) != SCFM_OK || scfm_safetensors_open(argv[2], &b, &err) != SCFM_OK) {
        fprintf(stderr, "compare_weights: %s\n", err.message);
        return 2;
    }
    int status = 0;
    for (int i = 0; i < scfm_safetensors_count(a) && !status; i++) {
        const scfm_st_tensor *ta = scfm_safetensors_at(a, i), *tb = scfm_safetensors_find(b, ta->name);
        if (argc == 5 && strstr(ta->name, argv[4])) continue;
        int64_t n = scfm_st_tensor_numel(ta);
        if (!tb || tb->dtype != SCFM_DTYPE_F32 || ta->dtype != SCFM_DTYPE_F32 || scfm_st_tensor_numel(tb) != n) {
            fprintf(stderr, "compare_weights: tensor %s differs in presence, dtype or size\n", ta->name);
            status = 2;
            break;
        }
        const float *x = ta->data, *y = tb->data;
        double diff = 0.0, scale = 0.0;
        for (int64_t j = 0; j < n; j++) {
            diff += ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
            scale += (double)x[j] * x[j];
        }
        double rel = scale > 0 ? sqrt(diff / scale) : sqrt(diff);
        if (rel > worst) {
            worst = rel;
            worst_name = ta->name;
        }
    }
    if (!status && scfm_safetensors_count(a) != scfm_safetensors_count(b)) status = 2;
    if (!status) {
        printf("compare_weights: largest relative difference %.3g (%s)\n", worst, worst_name[0] ? worst_name : "-");
        status = worst > tolerance ? 1 : 0;
    }
    scfm_safetensors_close(a);
    scfm_safetensors_close(b);
    return status;
}
