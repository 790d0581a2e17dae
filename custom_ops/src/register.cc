// RegisterCustomOps: the library's only exported symbol (exports.lds). ONNX Runtime calls it
// once per SessionOptions.register_custom_ops_library; it adds the domain com.aquant with
// BorderRound for every execution provider this build has kernels for.
#include <mutex>
#include <string>
#include <vector>

#include "border_round_attrs.h"
#include "kernels.h"

namespace {

// ORT keeps raw pointers to the ops and domains for as long as any session that registered
// them lives, so both stay alive until the library is unloaded.
const aquant::LiteOps& AllKernels() {
  static const aquant::LiteOps ops = [] {
    aquant::LiteOps created;
    aquant::CreateCpuKernels(created);
    aquant::CreateCudaKernels(created);
    return created;
  }();
  return ops;
}

std::mutex domains_mutex;
std::vector<Ort::CustomOpDomain> domains;

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // Version 1 of the API exists in every runtime and can still report the problem.
    const std::string message = "com.aquant::BorderRound: the op library needs ONNX Runtime >= 1.21 (API version " +
                                std::to_string(ORT_API_VERSION) + "); upgrade onnxruntime";
    return api_base->GetApi(1)->CreateStatus(ORT_FAIL, message.c_str());
  }
  Ort::InitApi(api);
  try {
    Ort::CustomOpDomain domain{aquant::kDomain};
    for (const auto& op : AllKernels()) domain.Add(op.get());
    Ort::UnownedSessionOptions(options).Add(domain);
    std::lock_guard<std::mutex> lock(domains_mutex);
    domains.push_back(std::move(domain));
    return nullptr;
  } catch (const Ort::Exception& error) {
    return api->CreateStatus(error.GetOrtErrorCode(), error.what());
  } catch (const std::exception& error) {
    return api->CreateStatus(ORT_FAIL, error.what());
  }
}
