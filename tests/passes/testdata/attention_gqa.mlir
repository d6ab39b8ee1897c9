// Attention as our model's input-phase IR has it (iree-compile --compile-to=input), for
// passes/attention_kernel.py: q [H, M, D], k/v [H, N, D], a constant scale, an additive mask
// [H, M, N]; H = 2 KV heads, D = 16.
// @prefill: the model's mask chain: a position mask [1, 1, S, N] broadcast over the G = 2 query
//   heads of a position ([1, 1, S, 2, N]), reshaped to rows [1, 1, S * 2, N], broadcast over
//   the KV heads and collapsed (the pass hands the kernel the [1, 1, S, N] source).
// @masked: any mask [H, M, N] (read as it is). @decode: M static (one position, 4 rows).
// @wide_head: D = 12 (not a multiple of 8): the kernel does not apply, the op stays.
module {
  util.func public @prefill(%q: tensor<2x?x16xf32>, %k: tensor<2x?x16xf32>, %v: tensor<2x?x16xf32>, %pmask: tensor<1x1x?x?xf32>) -> tensor<2x?x16xf32> {
    %c1 = arith.constant 1 : index
    %c2 = arith.constant 2 : index
    %c3 = arith.constant 3 : index
    %one = arith.constant 1 : i64
    %scale = arith.constant 2.500000e-01 : f32
    %s = tensor.dim %pmask, %c2 : tensor<1x1x?x?xf32>
    %n = tensor.dim %pmask, %c3 : tensor<1x1x?x?xf32>
    %g0 = tensor.empty(%s, %n) : tensor<1x1x?x2x?xf32>
    %g = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d4)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2, d3, d4)>], iterator_types = ["parallel", "parallel", "parallel", "parallel", "parallel"]} ins(%pmask : tensor<1x1x?x?xf32>) outs(%g0 : tensor<1x1x?x2x?xf32>) {
    ^bb0(%in: f32, %out: f32):
      linalg.yield %in : f32
    } -> tensor<1x1x?x2x?xf32>
    %rows = arith.muli %s, %c2 : index
    %rows64 = arith.index_cast %rows : index to i64
    %n64 = arith.index_cast %n : index to i64
    %shape = tensor.from_elements %one, %one, %rows64, %n64 : tensor<4xi64>
    %r = tensor.reshape %g(%shape) : (tensor<1x1x?x2x?xf32>, tensor<4xi64>) -> tensor<1x1x?x?xf32>
    %h0 = tensor.empty(%rows, %n) : tensor<1x2x?x?xf32>
    %h = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, 0, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%r : tensor<1x1x?x?xf32>) outs(%h0 : tensor<1x2x?x?xf32>) {
    ^bb0(%in: f32, %out: f32):
      linalg.yield %in : f32
    } -> tensor<1x2x?x?xf32>
    %mask = tensor.collapse_shape %h [[0, 1], [2], [3]] : tensor<1x2x?x?xf32> into tensor<2x?x?xf32>
    %m = tensor.dim %q, %c1 : tensor<2x?x16xf32>
    %o0 = tensor.empty(%m) : tensor<2x?x16xf32>
    %o = iree_linalg_ext.attention <indexing_maps = [affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d3)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d4, d3)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d4, d2)>, affine_map<(d0, d1, d2, d3, d4) -> ()>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d4)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2)>]> ins(%q, %k, %v, %scale, %mask : tensor<2x?x16xf32>, tensor<2x?x16xf32>, tensor<2x?x16xf32>, f32, tensor<2x?x?xf32>) outs(%o0 : tensor<2x?x16xf32>) {
    ^bb0(%score: f32):
      iree_linalg_ext.yield %score : f32
    } -> tensor<2x?x16xf32>
    util.return %o : tensor<2x?x16xf32>
  }
  util.func public @masked(%q: tensor<2x?x16xf32>, %k: tensor<2x?x16xf32>, %v: tensor<2x?x16xf32>, %mask: tensor<2x?x?xf32>) -> tensor<2x?x16xf32> {
    %c1 = arith.constant 1 : index
    %scale = arith.constant 2.500000e-01 : f32
    %m = tensor.dim %q, %c1 : tensor<2x?x16xf32>
    %o0 = tensor.empty(%m) : tensor<2x?x16xf32>
    %o = iree_linalg_ext.attention <indexing_maps = [affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d3)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d4, d3)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d4, d2)>, affine_map<(d0, d1, d2, d3, d4) -> ()>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d4)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2)>]> ins(%q, %k, %v, %scale, %mask : tensor<2x?x16xf32>, tensor<2x?x16xf32>, tensor<2x?x16xf32>, f32, tensor<2x?x?xf32>) outs(%o0 : tensor<2x?x16xf32>) {
    ^bb0(%score: f32):
      iree_linalg_ext.yield %score : f32
    } -> tensor<2x?x16xf32>
    util.return %o : tensor<2x?x16xf32>
  }
  util.func public @decode(%q: tensor<2x4x16xf32>, %k: tensor<2x?x16xf32>, %v: tensor<2x?x16xf32>, %mask: tensor<2x4x?xf32>) -> tensor<2x4x16xf32> {
    %scale = arith.constant 2.500000e-01 : f32
    %o0 = tensor.empty() : tensor<2x4x16xf32>
    %o = iree_linalg_ext.attention <indexing_maps = [affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d3)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d4, d3)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d4, d2)>, affine_map<(d0, d1, d2, d3, d4) -> ()>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d4)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2)>]> ins(%q, %k, %v, %scale, %mask : tensor<2x4x16xf32>, tensor<2x?x16xf32>, tensor<2x?x16xf32>, f32, tensor<2x4x?xf32>) outs(%o0 : tensor<2x4x16xf32>) {
    ^bb0(%score: f32):
      iree_linalg_ext.yield %score : f32
    } -> tensor<2x4x16xf32>
    util.return %o : tensor<2x4x16xf32>
  }
  util.func public @wide_head(%q: tensor<2x?x12xf32>, %k: tensor<2x?x12xf32>, %v: tensor<2x?x12xf32>, %mask: tensor<2x?x?xf32>) -> tensor<2x?x12xf32> {
    %c1 = arith.constant 1 : index
    %scale = arith.constant 2.500000e-01 : f32
    %m = tensor.dim %q, %c1 : tensor<2x?x12xf32>
    %o0 = tensor.empty(%m) : tensor<2x?x12xf32>
    %o = iree_linalg_ext.attention <indexing_maps = [affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d3)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d4, d3)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d4, d2)>, affine_map<(d0, d1, d2, d3, d4) -> ()>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d4)>, affine_map<(d0, d1, d2, d3, d4) -> (d0, d1, d2)>]> ins(%q, %k, %v, %scale, %mask : tensor<2x?x12xf32>, tensor<2x?x12xf32>, tensor<2x?x12xf32>, f32, tensor<2x?x?xf32>) outs(%o0 : tensor<2x?x12xf32>) {
    ^bb0(%score: f32):
      iree_linalg_ext.yield %score : f32
    } -> tensor<2x?x12xf32>
    util.return %o : tensor<2x?x12xf32>
  }
}
