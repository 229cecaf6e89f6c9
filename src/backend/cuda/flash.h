/* The tiles of flash attention (flash.cu), shared by the host plan
 * (cuda_backend.h, plan.c) and the kernels (flash_kernels.cuh): plain C. */
#ifndef SCFM_BACKEND_CUDA_FLASH_H
#define SCFM_BACKEND_CUDA_FLASH_H

#include <stdint.h>

/* Rows of a tile: a block computes one tile of one cell and one head. */
#define SCFM_CUDA_FLASH_TILE 64

typedef struct {
    int32_t start, len;   /* the cell's first token in the stream, its length */
    int32_t first, cell;  /* the tile's first row in the cell, the cell's index in the batch */
} scfm_cuda_flash_tile;

#endif
