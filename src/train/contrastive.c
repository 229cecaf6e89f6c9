/* InfoNCE with the views of every rank as negatives. Each rank gathers the
 * unit projections z of all ranks' views (a few hundred floats per cell,
 * negligible next to the gradients), computes the loss of its own anchors
 * against all of them and d(its anchors' loss)/dz for every view; summing
 * that over ranks gives each rank the exact gradient of the global loss at
 * its own views, which backward then takes through the projection head,
 * pooling and the encoder. The result equals one process holding every
 * rank's views in rank order, up to the order of float additions. */
#include <stdlib.h>
#include <string.h>

#include "scfm/train.h"

struct scfm_contrastive {
    float *z_all, *dz_all;  /* [N,P] */
    float *sim, *probs;     /* [n,N] */
    size_t cap_z, cap_s;
};

scfm_status scfm_contrastive_create(scfm_contrastive **out, scfm_error *err) {
    *out = calloc(1, sizeof **out);
    return *out ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
}

void scfm_contrastive_free(scfm_contrastive *c) {
    if (!c) return;
    free(c->z_all);
    free(c->dz_all);
    free(c->sim);
    free(c->probs);
    free(c);
}

/* Makes a and b hold `need` floats each (contents are not kept). */
static int reserve_pair(float **a, float **b, size_t *cap, size_t need) {
    if (need <= *cap) return 1;
    free(*a);
    free(*b);
    *a = malloc(sizeof(float) * need);
    *b = malloc(sizeof(float) * need);
    *cap = *a && *b ? need : 0;
    return *cap != 0;
}

scfm_status scfm_contrastive_step(scfm_contrastive *c, scfm_comm *comm, scfm_model *m, const scfm_batch *b,
                                  scfm_status local, float scale, double *loss_sum, scfm_error *err) {
    const int world = scfm_comm_size(comm), rank = scfm_comm_rank(comm);
    const int P = scfm_model_get_config(m)->projection_dim;
    const float *z = NULL;
    int64_t n = 0;
    if (local == SCFM_OK && b && b->n_cells > 0) {
        local = scfm_model_contrastive_forward(m, b, &z, err);
        n = b->n_cells;
    }
    scfm_status st = scfm_comm_agree(comm, local, err);
    int64_t counts[world];
    if (st == SCFM_OK) st = scfm_comm_allgather(comm, &n, sizeof n, counts, err);
    if (st != SCFM_OK) return st;
    int64_t N = 0, lo = 0;
    size_t bytes[world];
    for (int r = 0; r < world; r++) {
        if (r == rank) lo = N;
        N += counts[r];
        bytes[r] = sizeof(float) * (size_t)P * (size_t)counts[r];
    }
    if (N == 0) return SCFM_OK;
    if (!reserve_pair(&c->z_all, &c->dz_all, &c->cap_z, (size_t)N * P) ||
        !reserve_pair(&c->sim, &c->probs, &c->cap_s, (size_t)(n > 0 ? n : 1) * (size_t)N))
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for a contrastive batch of %lld views", (long long)N);
    if ((st = scfm_comm_agree(comm, st, err)) != SCFM_OK) return st;
    if ((st = scfm_comm_allgatherv(comm, z, bytes, c->z_all, err)) != SCFM_OK) return st;
    const float log_tau = scfm_model_log_temperature(m);
    *loss_sum += scfm_infonce_forward(c->sim, c->probs, c->z_all, (int)N, P, (int)lo, (int)n, log_tau);
    memset(c->dz_all, 0, sizeof(float) * (size_t)N * P);
    scfm_infonce_backward(c->dz_all, scfm_model_log_temperature_grad(m), c->probs, c->sim, c->z_all, (int)N, P,
                          (int)lo, (int)n, log_tau, scale);
    if (world > 1 && (st = scfm_comm_sum_f32(comm, c->dz_all, (size_t)N * P, err)) != SCFM_OK) return st;
    if (n > 0) scfm_model_contrastive_grad(m, c->dz_all + (size_t)lo * P);
    return SCFM_OK;
}
