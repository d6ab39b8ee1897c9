// The int4_group.mlir weight behind the elementwise steps our export puts before the kernels'
// prompt matmuls (passes/quantize_glue.py): silu(gate) * up of a [1, M, 128] tensor's halves
// (@prefill_silu; @prefill_silu_rows: of a reshaped [M, 128] tensor, the slices' row count
// its own), RMSNorm with a weight vector (@prefill_norm), and another activation (tanh,
// @prefill_other) that the pass must leave to the plain quantization.
module {
  util.global private @qweight = dense<"0xCD342FCC4F521A85997B368C28583580BEECBBCF617A55278A790FEA79009C005F403B02C36955B146F996BF985D7AA37F3301691ECBF3C75B44BF17E5125362BC987CC501E41F6A309223F393F9A18345ED1E268EECEDCE4716CB7B279F74C9FA6F3CCB6E2F7DD9D552EE154365A923F61504FD3D8A099E803666232D11C29D6E53364B2B0810C143507005917F3DC775D9984D8FABACD24CE483396240A349CEF0FD1D94169E4510A060D1BA390DB3FAC79D7ACFB0D47FCA5C65A7DB10CAD29FFCD01CD066036E6996D3ADAD32A5B425D3361527AC727E1A2C39BA66DC93258DD4081F5D7140DDB7B37FC95003D80E3A869124FDA990213A62EBB1A04A2488450EFD2A34B868480B0EFBEB8883CCA24036B9E878377476B425DF3D311CD8CC94927B1CF6BFF79EF013401CECE48421BB7D4642136C4B917DA6FFDB2817D932A732E56802A220ABC4D002AAE43712E985664FC8F2D76ECCEABD0357755275CBEC158C6032FA89678CC161B93C92282108840EAD6C1428F01AB0AB030779287B209B084097F333F7ECE57F5643BB7B15F43F3AEA5524379EC139F7CD719566CBE4DA182547059B5518ED1862698A20D348B125E1A27183A2ABA94EE89A5AAC8214520A4753E49A8A9FF7FB33485211A8F52EAD0E71560E355941695AAA3081E42B69850EFC52079A8DAD630C203F4E733F96C65C6AEDB77308E5C16BC9B3E7D70C70527CC898AEA59681266F70D2EF07F27DB8568FC352DFE154FFFEACACA87064162946D075DE1CE937695B127B8009A5138F2B527B54F336561DC7C6476E9C9263E6D7ED2176A434DB23980407297C6EB9F7C4A14752B0C3AB8DB7BE1330002C09EA87522CC3D0BF42DD552E9C24CBA11FB5AC83E944D9CE1D823E783115D17D15684DEC3BB749E005A31401F6331C2FC96AF52FBA2901D1310049A3327DACA4B264DFD678DE87092B55CB47072296C4574B5F1AFC364705F9D93AC5C2B5D1FEA748F444364A482858AAB0B82DEAC596DE62DE0513E8164C10B1904B6F105A1DE3F812B2AA05222C600C6D6D65F48EA28C2A3C4FB293B0FC22558F414977ADB31BCB217DB1E4E6429E557BEC015CA5CA50FB3D36B719D665937D0EC80DC28D6DB114F42E91443D2B45CF356852A74DD1E5D9F316CB79ABE5C6DF391FDCD37FB813B52AB707E64CA9DA2C1C8523605D982CD319DE0E3D8E42E3D2CF971FBDD0701737FFF6D7460114CDD4B7B20B087DED1CAB1DC91C20612BE2C9EC0F10750EE67C8FAE83ED6DB54F57CA0D21942EAF7560A9F127715C9705C3EE0C948317E4F0FB92BCBBAEC16D5378C1001065BEFCA275B38BB31AB48A0C0388627F5540B6D7279FAAF9BF53EDDE6FB22BA4F05EB447466B17F800A827EFAEFE695CCB79FA151323AC48A41AF9D383791AFEEF3DBDDA43E2D3E91D39B5C1D286209A372223"> : tensor<32x2x16xi8>
  util.global private @scale = dense<"0x7B2B8028092F792E9B2D0329F52D582C9A28A42D7526592CAA277324D02A002BD62B6B218B27AA24A22DA823332E022853299729C92BF529722C202A432DF92E56269E25E028C127512D482D472CFF2E662EEC2E032B2F2C7C2AE5283429662D3E285026CE2C142CAB282929292E3423BF28372CF32C502C472C972DAA2CAA2C"> : tensor<32x2xf16>
  util.global private @norm_weight = dense<"0x560AA73F9B6AA73F30F6813F472A493F67CE0D3F7724623FB391683F28970B3F637B0C3F01E5BF3FD580933FDC083C3FB9586F3F22B2BC3F1AE7B23FC30FAC3FA274643FC2367E3FC29D963FC4900F3FC61D873FDA7D453F6998B03F5B70103F6CEF963F0F5FAF3F8C313A3F0C9EB23F1AA4AF3F8BBD043F378F9A3F9F4E003F3B6E803F69C96F3F6108343F712F533F1032A73F0103513F6527263FD768993FC9D3723FA643A63FCE4A3C3F68DD513F7462A63F9CE7803F39D1803F38773C3FA6B8033FE173B73FAEF8153F9026AC3F6F2D5E3F1FBBB93FBC40663F55DDB73F3E30873F82793D3FE8E69E3F6752963F0994973F31BD763FB0CD383F540A923F"> : tensor<64xf32>
  util.func public @prefill_silu(%gu: tensor<1x?x128xf32>) -> tensor<?x32xf32> {
    %g_c1 = arith.constant 1 : index
    %g_one = arith.constant 1.000000e+00 : f32
    %g_rows = tensor.dim %gu, %g_c1 : tensor<1x?x128xf32>
    %g_g = tensor.extract_slice %gu[0, 0, 0] [1, %g_rows, 64] [1, 1, 1] : tensor<1x?x128xf32> to tensor<1x?x64xf32>
    %g_u = tensor.extract_slice %gu[0, 0, 64] [1, %g_rows, 64] [1, 1, 1] : tensor<1x?x128xf32> to tensor<1x?x64xf32>
    %g_e3 = tensor.empty(%g_rows) : tensor<1x?x64xf32>
    %g_sig = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_g : tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %out: f32):
      %g_n = arith.negf %in0 : f32
      %g_e = math.exp %g_n : f32
      %g_a = arith.addf %g_e, %g_one : f32
      %g_d = arith.divf %g_one, %g_a : f32
      linalg.yield %g_d : f32
    } -> tensor<1x?x64xf32>
    %g_t = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_g, %g_sig : tensor<1x?x64xf32>, tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %in1: f32, %out: f32):
      %g_p = arith.mulf %in0, %in1 : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x64xf32>
    %g_h = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_u, %g_t : tensor<1x?x64xf32>, tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %in1: f32, %out: f32):
      %g_p = arith.mulf %in0, %in1 : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x64xf32>
    %x = tensor.collapse_shape %g_h [[0, 1], [2]] : tensor<1x?x64xf32> into tensor<?x64xf32>
    %c0 = arith.constant 0 : index
    %m = tensor.dim %gu, %g_c1 : tensor<1x?x128xf32>
    %zero = arith.constant 0.000000e+00 : f32
    %shifts = arith.constant dense<[0, 4]> : tensor<2xi8>
    %mask = arith.constant dense<15> : tensor<1xi8>
    %eight = arith.constant dense<8> : tensor<1xi8>
    %sh = tensor.expand_shape %shifts [[0, 1, 2, 3]] output_shape [1, 1, 2, 1] : tensor<2xi8> into tensor<1x1x2x1xi8>
    %q = util.global.load immutable @qweight : tensor<32x2x16xi8>
    %qx = tensor.expand_shape %q [[0], [1], [2, 3]] output_shape [32, 2, 1, 16] : tensor<32x2x16xi8> into tensor<32x2x1x16xi8>
    %ei = tensor.empty() : tensor<32x2x2x16xi8>
    %l = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, d3)>, affine_map<(d0, d1, d2, d3) -> (0, 0, d2, 0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%qx, %sh : tensor<32x2x1x16xi8>, tensor<1x1x2x1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.shrsi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %a = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%l, %mask : tensor<32x2x2x16xi8>, tensor<1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.andi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %r = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%a, %eight : tensor<32x2x2x16xi8>, tensor<1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.subi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %ef = tensor.empty() : tensor<32x2x2x16xf32>
    %f = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%r : tensor<32x2x2x16xi8>) outs(%ef : tensor<32x2x2x16xf32>) {
    ^bb0(%in: i8, %out: f32):
      %v = arith.sitofp %in : i8 to f32
      linalg.yield %v : f32
    } -> tensor<32x2x2x16xf32>
    %sc = util.global.load immutable @scale : tensor<32x2xf16>
    %sch = tensor.expand_shape %sc [[0], [1, 2, 3]] output_shape [32, 2, 1, 1] : tensor<32x2xf16> into tensor<32x2x1x1xf16>
    %ese = tensor.empty() : tensor<32x2x1x1xf32>
    %scx = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%sch : tensor<32x2x1x1xf16>) outs(%ese : tensor<32x2x1x1xf32>) {
    ^bb0(%in: f16, %out: f32):
      %v = arith.extf %in : f16 to f32
      linalg.yield %v : f32
    } -> tensor<32x2x1x1xf32>
    %w = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, 0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%f, %scx : tensor<32x2x2x16xf32>, tensor<32x2x1x1xf32>) outs(%ef : tensor<32x2x2x16xf32>) {
    ^bb0(%in: f32, %s: f32, %out: f32):
      %v = arith.mulf %in, %s : f32
      linalg.yield %v : f32
    } -> tensor<32x2x2x16xf32>
    %te = tensor.empty() : tensor<2x2x16x32xf32>
    %t = linalg.transpose ins(%w : tensor<32x2x2x16xf32>) outs(%te : tensor<2x2x16x32xf32>) permutation = [1, 2, 3, 0]
    %wkn = tensor.collapse_shape %t [[0, 1, 2], [3]] : tensor<2x2x16x32xf32> into tensor<64x32xf32>
    %oe = tensor.empty(%m) : tensor<?x32xf32>
    %init = linalg.fill ins(%zero : f32) outs(%oe : tensor<?x32xf32>) -> tensor<?x32xf32>
    %y = linalg.matmul ins(%x, %wkn : tensor<?x64xf32>, tensor<64x32xf32>) outs(%init : tensor<?x32xf32>) -> tensor<?x32xf32>
    util.return %y : tensor<?x32xf32>
  }
  util.func public @prefill_silu_rows(%gu2: tensor<?x128xf32>) -> tensor<?x32xf32> {
    %g_c1 = arith.constant 1 : index
    %g_one = arith.constant 1.000000e+00 : f32
    %g_c0 = arith.constant 0 : index
    %g_rows = tensor.dim %gu2, %g_c0 : tensor<?x128xf32>
    %gu = tensor.expand_shape %gu2 [[0, 1], [2]] output_shape [1, %g_rows, 128] : tensor<?x128xf32> into tensor<1x?x128xf32>
    %g_g = tensor.extract_slice %gu[0, 0, 0] [1, %g_rows, 64] [1, 1, 1] : tensor<1x?x128xf32> to tensor<1x?x64xf32>
    %g_u = tensor.extract_slice %gu[0, 0, 64] [1, %g_rows, 64] [1, 1, 1] : tensor<1x?x128xf32> to tensor<1x?x64xf32>
    %g_e3 = tensor.empty(%g_rows) : tensor<1x?x64xf32>
    %g_sig = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_g : tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %out: f32):
      %g_n = arith.negf %in0 : f32
      %g_e = math.exp %g_n : f32
      %g_a = arith.addf %g_e, %g_one : f32
      %g_d = arith.divf %g_one, %g_a : f32
      linalg.yield %g_d : f32
    } -> tensor<1x?x64xf32>
    %g_t = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_g, %g_sig : tensor<1x?x64xf32>, tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %in1: f32, %out: f32):
      %g_p = arith.mulf %in0, %in1 : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x64xf32>
    %g_h = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_u, %g_t : tensor<1x?x64xf32>, tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %in1: f32, %out: f32):
      %g_p = arith.mulf %in0, %in1 : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x64xf32>
    %x = tensor.collapse_shape %g_h [[0, 1], [2]] : tensor<1x?x64xf32> into tensor<?x64xf32>
    %c0 = arith.constant 0 : index
    %m = tensor.dim %gu, %g_c1 : tensor<1x?x128xf32>
    %zero = arith.constant 0.000000e+00 : f32
    %shifts = arith.constant dense<[0, 4]> : tensor<2xi8>
    %mask = arith.constant dense<15> : tensor<1xi8>
    %eight = arith.constant dense<8> : tensor<1xi8>
    %sh = tensor.expand_shape %shifts [[0, 1, 2, 3]] output_shape [1, 1, 2, 1] : tensor<2xi8> into tensor<1x1x2x1xi8>
    %q = util.global.load immutable @qweight : tensor<32x2x16xi8>
    %qx = tensor.expand_shape %q [[0], [1], [2, 3]] output_shape [32, 2, 1, 16] : tensor<32x2x16xi8> into tensor<32x2x1x16xi8>
    %ei = tensor.empty() : tensor<32x2x2x16xi8>
    %l = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, d3)>, affine_map<(d0, d1, d2, d3) -> (0, 0, d2, 0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%qx, %sh : tensor<32x2x1x16xi8>, tensor<1x1x2x1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.shrsi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %a = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%l, %mask : tensor<32x2x2x16xi8>, tensor<1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.andi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %r = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%a, %eight : tensor<32x2x2x16xi8>, tensor<1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.subi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %ef = tensor.empty() : tensor<32x2x2x16xf32>
    %f = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%r : tensor<32x2x2x16xi8>) outs(%ef : tensor<32x2x2x16xf32>) {
    ^bb0(%in: i8, %out: f32):
      %v = arith.sitofp %in : i8 to f32
      linalg.yield %v : f32
    } -> tensor<32x2x2x16xf32>
    %sc = util.global.load immutable @scale : tensor<32x2xf16>
    %sch = tensor.expand_shape %sc [[0], [1, 2, 3]] output_shape [32, 2, 1, 1] : tensor<32x2xf16> into tensor<32x2x1x1xf16>
    %ese = tensor.empty() : tensor<32x2x1x1xf32>
    %scx = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%sch : tensor<32x2x1x1xf16>) outs(%ese : tensor<32x2x1x1xf32>) {
    ^bb0(%in: f16, %out: f32):
      %v = arith.extf %in : f16 to f32
      linalg.yield %v : f32
    } -> tensor<32x2x1x1xf32>
    %w = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, 0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%f, %scx : tensor<32x2x2x16xf32>, tensor<32x2x1x1xf32>) outs(%ef : tensor<32x2x2x16xf32>) {
    ^bb0(%in: f32, %s: f32, %out: f32):
      %v = arith.mulf %in, %s : f32
      linalg.yield %v : f32
    } -> tensor<32x2x2x16xf32>
    %te = tensor.empty() : tensor<2x2x16x32xf32>
    %t = linalg.transpose ins(%w : tensor<32x2x2x16xf32>) outs(%te : tensor<2x2x16x32xf32>) permutation = [1, 2, 3, 0]
    %wkn = tensor.collapse_shape %t [[0, 1, 2], [3]] : tensor<2x2x16x32xf32> into tensor<64x32xf32>
    %oe = tensor.empty(%m) : tensor<?x32xf32>
    %init = linalg.fill ins(%zero : f32) outs(%oe : tensor<?x32xf32>) -> tensor<?x32xf32>
    %y = linalg.matmul ins(%x, %wkn : tensor<?x64xf32>, tensor<64x32xf32>) outs(%init : tensor<?x32xf32>) -> tensor<?x32xf32>
    util.return %y : tensor<?x32xf32>
  }
  util.func public @prefill_norm(%hh: tensor<1x?x64xf32>) -> tensor<?x32xf32> {
    %g_c1 = arith.constant 1 : index
    %g_two = arith.constant 2 : i64
    %g_zf = arith.constant 0.000000e+00 : f32
    %g_kf = arith.constant 6.400000e+01 : f32
    %g_eps = arith.constant 9.99999974E-6 : f32
    %g_rows = tensor.dim %hh, %g_c1 : tensor<1x?x64xf32>
    %g_nw = util.global.load immutable @norm_weight : tensor<64xf32>
    %g_e3 = tensor.empty(%g_rows) : tensor<1x?x64xf32>
    %g_e1 = tensor.empty(%g_rows) : tensor<1x?x1xf32>
    %g_sq = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%hh : tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %out: f32):
      %g_p = math.fpowi %in0, %g_two : f32, i64
      linalg.yield %g_p : f32
    } -> tensor<1x?x64xf32>
    %g_z = linalg.fill ins(%g_zf : f32) outs(%g_e1 : tensor<1x?x1xf32>) -> tensor<1x?x1xf32>
    %g_sum = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, 0)>], iterator_types = ["parallel", "parallel", "reduction"]} ins(%g_sq : tensor<1x?x64xf32>) outs(%g_z : tensor<1x?x1xf32>) {
    ^bb0(%in0: f32, %out: f32):
      %g_p = arith.addf %in0, %out : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x1xf32>
    %g_mean = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_sum : tensor<1x?x1xf32>) outs(%g_e1 : tensor<1x?x1xf32>) {
    ^bb0(%in0: f32, %out: f32):
      %g_p = arith.divf %in0, %g_kf : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x1xf32>
    %g_ve = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_mean : tensor<1x?x1xf32>) outs(%g_e1 : tensor<1x?x1xf32>) {
    ^bb0(%in0: f32, %out: f32):
      %g_p = arith.addf %in0, %g_eps : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x1xf32>
    %g_r = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_ve : tensor<1x?x1xf32>) outs(%g_e1 : tensor<1x?x1xf32>) {
    ^bb0(%in0: f32, %out: f32):
      %g_p = math.rsqrt %in0 : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x1xf32>
    %g_y = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, 0)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%hh, %g_r : tensor<1x?x64xf32>, tensor<1x?x1xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %in1: f32, %out: f32):
      %g_p = arith.mulf %in0, %in1 : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x64xf32>
    %g_xw = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_nw, %g_y : tensor<64xf32>, tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %in1: f32, %out: f32):
      %g_p = arith.mulf %in0, %in1 : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x64xf32>
    %x = tensor.collapse_shape %g_xw [[0, 1], [2]] : tensor<1x?x64xf32> into tensor<?x64xf32>
    %c0 = arith.constant 0 : index
    %m = tensor.dim %hh, %g_c1 : tensor<1x?x64xf32>
    %zero = arith.constant 0.000000e+00 : f32
    %shifts = arith.constant dense<[0, 4]> : tensor<2xi8>
    %mask = arith.constant dense<15> : tensor<1xi8>
    %eight = arith.constant dense<8> : tensor<1xi8>
    %sh = tensor.expand_shape %shifts [[0, 1, 2, 3]] output_shape [1, 1, 2, 1] : tensor<2xi8> into tensor<1x1x2x1xi8>
    %q = util.global.load immutable @qweight : tensor<32x2x16xi8>
    %qx = tensor.expand_shape %q [[0], [1], [2, 3]] output_shape [32, 2, 1, 16] : tensor<32x2x16xi8> into tensor<32x2x1x16xi8>
    %ei = tensor.empty() : tensor<32x2x2x16xi8>
    %l = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, d3)>, affine_map<(d0, d1, d2, d3) -> (0, 0, d2, 0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%qx, %sh : tensor<32x2x1x16xi8>, tensor<1x1x2x1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.shrsi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %a = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%l, %mask : tensor<32x2x2x16xi8>, tensor<1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.andi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %r = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%a, %eight : tensor<32x2x2x16xi8>, tensor<1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.subi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %ef = tensor.empty() : tensor<32x2x2x16xf32>
    %f = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%r : tensor<32x2x2x16xi8>) outs(%ef : tensor<32x2x2x16xf32>) {
    ^bb0(%in: i8, %out: f32):
      %v = arith.sitofp %in : i8 to f32
      linalg.yield %v : f32
    } -> tensor<32x2x2x16xf32>
    %sc = util.global.load immutable @scale : tensor<32x2xf16>
    %sch = tensor.expand_shape %sc [[0], [1, 2, 3]] output_shape [32, 2, 1, 1] : tensor<32x2xf16> into tensor<32x2x1x1xf16>
    %ese = tensor.empty() : tensor<32x2x1x1xf32>
    %scx = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%sch : tensor<32x2x1x1xf16>) outs(%ese : tensor<32x2x1x1xf32>) {
    ^bb0(%in: f16, %out: f32):
      %v = arith.extf %in : f16 to f32
      linalg.yield %v : f32
    } -> tensor<32x2x1x1xf32>
    %w = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, 0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%f, %scx : tensor<32x2x2x16xf32>, tensor<32x2x1x1xf32>) outs(%ef : tensor<32x2x2x16xf32>) {
    ^bb0(%in: f32, %s: f32, %out: f32):
      %v = arith.mulf %in, %s : f32
      linalg.yield %v : f32
    } -> tensor<32x2x2x16xf32>
    %te = tensor.empty() : tensor<2x2x16x32xf32>
    %t = linalg.transpose ins(%w : tensor<32x2x2x16xf32>) outs(%te : tensor<2x2x16x32xf32>) permutation = [1, 2, 3, 0]
    %wkn = tensor.collapse_shape %t [[0, 1, 2], [3]] : tensor<2x2x16x32xf32> into tensor<64x32xf32>
    %oe = tensor.empty(%m) : tensor<?x32xf32>
    %init = linalg.fill ins(%zero : f32) outs(%oe : tensor<?x32xf32>) -> tensor<?x32xf32>
    %y = linalg.matmul ins(%x, %wkn : tensor<?x64xf32>, tensor<64x32xf32>) outs(%init : tensor<?x32xf32>) -> tensor<?x32xf32>
    util.return %y : tensor<?x32xf32>
  }
  util.func public @prefill_other(%gu: tensor<1x?x128xf32>) -> tensor<?x32xf32> {
    %g_c1 = arith.constant 1 : index
    %g_one = arith.constant 1.000000e+00 : f32
    %g_rows = tensor.dim %gu, %g_c1 : tensor<1x?x128xf32>
    %g_g = tensor.extract_slice %gu[0, 0, 0] [1, %g_rows, 64] [1, 1, 1] : tensor<1x?x128xf32> to tensor<1x?x64xf32>
    %g_u = tensor.extract_slice %gu[0, 0, 64] [1, %g_rows, 64] [1, 1, 1] : tensor<1x?x128xf32> to tensor<1x?x64xf32>
    %g_e3 = tensor.empty(%g_rows) : tensor<1x?x64xf32>
    %g_sig = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_g : tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %out: f32):
      %g_d = math.tanh %in0 : f32
      linalg.yield %g_d : f32
    } -> tensor<1x?x64xf32>
    %g_t = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_g, %g_sig : tensor<1x?x64xf32>, tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %in1: f32, %out: f32):
      %g_p = arith.mulf %in0, %in1 : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x64xf32>
    %g_h = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1, d2)>], iterator_types = ["parallel", "parallel", "parallel"]} ins(%g_u, %g_t : tensor<1x?x64xf32>, tensor<1x?x64xf32>) outs(%g_e3 : tensor<1x?x64xf32>) {
    ^bb0(%in0: f32, %in1: f32, %out: f32):
      %g_p = arith.mulf %in0, %in1 : f32
      linalg.yield %g_p : f32
    } -> tensor<1x?x64xf32>
    %x = tensor.collapse_shape %g_h [[0, 1], [2]] : tensor<1x?x64xf32> into tensor<?x64xf32>
    %c0 = arith.constant 0 : index
    %m = tensor.dim %gu, %g_c1 : tensor<1x?x128xf32>
    %zero = arith.constant 0.000000e+00 : f32
    %shifts = arith.constant dense<[0, 4]> : tensor<2xi8>
    %mask = arith.constant dense<15> : tensor<1xi8>
    %eight = arith.constant dense<8> : tensor<1xi8>
    %sh = tensor.expand_shape %shifts [[0, 1, 2, 3]] output_shape [1, 1, 2, 1] : tensor<2xi8> into tensor<1x1x2x1xi8>
    %q = util.global.load immutable @qweight : tensor<32x2x16xi8>
    %qx = tensor.expand_shape %q [[0], [1], [2, 3]] output_shape [32, 2, 1, 16] : tensor<32x2x16xi8> into tensor<32x2x1x16xi8>
    %ei = tensor.empty() : tensor<32x2x2x16xi8>
    %l = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, d3)>, affine_map<(d0, d1, d2, d3) -> (0, 0, d2, 0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%qx, %sh : tensor<32x2x1x16xi8>, tensor<1x1x2x1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.shrsi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %a = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%l, %mask : tensor<32x2x2x16xi8>, tensor<1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.andi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %r = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%a, %eight : tensor<32x2x2x16xi8>, tensor<1xi8>) outs(%ei : tensor<32x2x2x16xi8>) {
    ^bb0(%in: i8, %s: i8, %out: i8):
      %v = arith.subi %in, %s : i8
      linalg.yield %v : i8
    } -> tensor<32x2x2x16xi8>
    %ef = tensor.empty() : tensor<32x2x2x16xf32>
    %f = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%r : tensor<32x2x2x16xi8>) outs(%ef : tensor<32x2x2x16xf32>) {
    ^bb0(%in: i8, %out: f32):
      %v = arith.sitofp %in : i8 to f32
      linalg.yield %v : f32
    } -> tensor<32x2x2x16xf32>
    %sc = util.global.load immutable @scale : tensor<32x2xf16>
    %sch = tensor.expand_shape %sc [[0], [1, 2, 3]] output_shape [32, 2, 1, 1] : tensor<32x2xf16> into tensor<32x2x1x1xf16>
    %ese = tensor.empty() : tensor<32x2x1x1xf32>
    %scx = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%sch : tensor<32x2x1x1xf16>) outs(%ese : tensor<32x2x1x1xf32>) {
    ^bb0(%in: f16, %out: f32):
      %v = arith.extf %in : f16 to f32
      linalg.yield %v : f32
    } -> tensor<32x2x1x1xf32>
    %w = linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, 0, 0)>, affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>], iterator_types = ["parallel", "parallel", "parallel", "parallel"]} ins(%f, %scx : tensor<32x2x2x16xf32>, tensor<32x2x1x1xf32>) outs(%ef : tensor<32x2x2x16xf32>) {
    ^bb0(%in: f32, %s: f32, %out: f32):
      %v = arith.mulf %in, %s : f32
      linalg.yield %v : f32
    } -> tensor<32x2x2x16xf32>
    %te = tensor.empty() : tensor<2x2x16x32xf32>
    %t = linalg.transpose ins(%w : tensor<32x2x2x16xf32>) outs(%te : tensor<2x2x16x32xf32>) permutation = [1, 2, 3, 0]
    %wkn = tensor.collapse_shape %t [[0, 1, 2], [3]] : tensor<2x2x16x32xf32> into tensor<64x32xf32>
    %oe = tensor.empty(%m) : tensor<?x32xf32>
    %init = linalg.fill ins(%zero : f32) outs(%oe : tensor<?x32xf32>) -> tensor<?x32xf32>
    %y = linalg.matmul ins(%x, %wkn : tensor<?x64xf32>, tensor<64x32xf32>) outs(%init : tensor<?x32xf32>) -> tensor<?x32xf32>
    util.return %y : tensor<?x32xf32>
  }
}
