/* A program outside the scfm tree, built against an installed scfm only
 * (tests/install/run_install_test.sh builds it with pkg-config and with
 * find_package). It uses the public API and checks the results by hand:
 * Random123's known answer for Philox-4x32-10, and the parameter count of a
 * tiny BERT. Exits 0 when both match. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "scfm/config.h"
#include "scfm/core.h"
#include "scfm/model.h"

int main(void) {
    int failures = 0;

    /* Philox-4x32-10, key 0, counter 0 (Random123 kat_vectors). */
    const uint32_t zero[4] = {0, 0, 0, 0};
    const uint32_t expect_rng[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
    uint32_t rng[4];
    scfm_philox(0, zero, rng);
    if (memcmp(rng, expect_rng, sizeof rng) != 0) {
        fprintf(stderr, "consumer: scfm_philox(0, 0) = %08x %08x %08x %08x, expected %08x %08x %08x %08x\n",
                rng[0], rng[1], rng[2], rng[3],
                expect_rng[0], expect_rng[1], expect_rng[2], expect_rng[3]);
        failures++;
    }

    /* A tiny post-LN BERT with learned positions. */
    scfm_config cfg;
    scfm_config_defaults(&cfg);
    scfm_model_config mc = cfg.model;
    mc.vocab_size = 10;
    mc.max_len = 8;
    mc.layers = 2;
    mc.hidden = 4;
    mc.heads = 2;
    mc.ffn = 8;
    mc.norm = SCFM_NORM_POST;
    mc.position = SCFM_POS_LEARNED;

    /* By hand, V=10 P=8 C=4 F=8 L=2:
     *   embeddings  V*C + P*C + 2C                 = 40 + 32 + 8       =  80
     *   per layer   4C^2+4C (q,k,v,attn out) + 2C (LN)
     *               + CF+F + FC+C (FFN) + 2C (LN)  = 80 + 8 + 72 + 12  = 172
     *   MLM head    C^2+C + 2C + V (decoder tied)  = 16 + 4 + 8 + 10   =  38
     *   total       80 + 2 * 172 + 38                                  = 462 */
    const size_t expect_params = 462;
    const int expect_tensors = 4 + 2 * 16 + 5;

    scfm_error err;
    scfm_error_clear(&err);
    scfm_model *m = NULL;
    if (scfm_model_create(&mc, &m, &err) != SCFM_OK) {
        fprintf(stderr, "consumer: scfm_model_create failed: %s: %s\n",
                scfm_status_name(err.status), err.message);
        return 1;
    }
    size_t n = scfm_model_num_params(m);
    int nt = scfm_model_num_tensors(m);
    printf("scfm %s: %zu parameters in %d tensors\n", SCFM_VERSION_STRING, n, nt);
    if (n != expect_params) {
        fprintf(stderr, "consumer: %zu parameters, expected %zu\n", n, expect_params);
        failures++;
    }
    if (nt != expect_tensors) {
        fprintf(stderr, "consumer: %d tensors, expected %d\n", nt, expect_tensors);
        failures++;
    }
    const scfm_tensor_info *wte = scfm_model_find_tensor(m, "bert.embeddings.word_embeddings.weight");
    if (!wte || wte->offset != 0 || wte->size != 40 || wte->shape[0] != 10 || wte->shape[1] != 4) {
        fprintf(stderr, "consumer: word embeddings tensor missing or not [10, 4] at offset 0\n");
        failures++;
    }
    scfm_model_free(m);

    if (failures) {
        fprintf(stderr, "consumer: %d check(s) failed\n", failures);
        return 1;
    }
    puts("consumer: OK");
    return 0;
}
