/* CUDA device detection (the trainer's scfm_device_ops.devices, which
 * train.backend's check calls): plain C with no CUDA header. */
#ifndef SCFM_BACKEND_CUDA_DEVICE_H
#define SCFM_BACKEND_CUDA_DEVICE_H

#include "scfm/core.h"

/* Devices the CUDA runtime sees; 0 when there are none, or no driver, or the
 * runtime fails, with the reason in *why (SCFM_ERR_CONFIG). Never exits. */
int scfm_cuda_device_count(scfm_error *why);

#endif
