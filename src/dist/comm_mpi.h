/* Private: the MPI communicator behind an scfm_comm, for library code that
 * must hand it to MPI-aware libraries (parallel HDF5). */
#ifndef SCFM_DIST_COMM_MPI_H
#define SCFM_DIST_COMM_MPI_H

#include <mpi.h>

#include "scfm/dist.h"

MPI_Comm scfm_comm_mpi(const scfm_comm *c);

#endif
