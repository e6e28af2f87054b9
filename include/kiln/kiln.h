#pragma once
// The one header a kiln user includes.
#include "core/allocator.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/logging.h"
#include "core/op.h"
#include "core/ops.h"
#include "core/scalar.h"
#include "core/shape.h"
#include "core/tensor.h"
