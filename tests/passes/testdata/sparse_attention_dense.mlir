// A dense masked attention (what the model exports without --sparse-attention): the pass must
// refuse it, and compiled it shows the S x C score tensor the dispatch check looks for.
func.func @dense_attention(%q: !torch.vtensor<[1,4,?,8],f32>, %k: !torch.vtensor<[1,4,96,8],f32>, %v: !torch.vtensor<[1,4,96,8],f32>, %mask: !torch.vtensor<[1,1,?,96],f32>) -> !torch.vtensor<[1,4,?,8],f32> {
  %dropout = torch.constant.float 0.000000e+00
  %false = torch.constant.bool false
  %none = torch.constant.none
  %0 = torch.aten.scaled_dot_product_attention %q, %k, %v, %mask, %dropout, %false, %none, %false : !torch.vtensor<[1,4,?,8],f32>, !torch.vtensor<[1,4,96,8],f32>, !torch.vtensor<[1,4,96,8],f32>, !torch.vtensor<[1,1,?,96],f32>, !torch.float, !torch.bool, !torch.none, !torch.bool -> !torch.vtensor<[1,4,?,8],f32>
  return %0 : !torch.vtensor<[1,4,?,8],f32>
}
