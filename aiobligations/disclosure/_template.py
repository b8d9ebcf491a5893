"""The commented ``[transparency]``, ``[security]`` and ``[disclosure]`` sections for ``aiobligations init``."""

from __future__ import annotations

__all__ = ["TEMPLATE"]

TEMPLATE = '''\
[transparency]
# What users are told before they use the service (AI Model Law 2.0, Art. 38(3)), shown at
# /.well-known/ai-transparency (JSON) and /ai/transparency (a page in Chinese and English).
# Each text is a string (used for both languages) or zh/en pair, as below. These texts describe the
# demo service: rewrite them for yours, in plain words a child or an older person can follow (Art. 8).

# Purpose (目的意图): what the service is for, and what it is not for.
purpose.zh = "示例助手是一个演示用的人工智能服务，用来展示服务提供者怎样履行《人工智能示范法 2.0》规定的透明度义务。它可以回答简单的文字问题，也可以生成示意图片。请不要用它来做医疗、法律、金融等重要决定。"
purpose.en = "Example Assistant is a demonstration AI service. It shows how a provider meets the transparency duties of the AI Model Law 2.0. It answers simple text questions and draws illustrative pictures. Please do not use it for important decisions, such as medical, legal or financial ones."

# Basic principles (基本原理): how it works, in plain words.
principles.zh = "它是一个很小的演示模型，不是大型语言模型，没有使用任何人的个人信息训练。它按固定的计算规则，根据您输入的文字算出回答或画出图片，同样的输入总是得到同样的结果。它并不理解您的问题，所以回答可能答非所问，也可能是错的。"
principles.en = "It is a very small demonstration model, not a large language model, and it was not trained on anyone's personal information. It follows fixed rules to work out an answer or a picture from the words you type, and the same input always gives the same result. It does not understand your question, so its answers may miss the point or be wrong."

# Main operating mechanism (主要运行机制): what happens to a request.
mechanism.zh = "您输入的文字通过网络发送到我们的服务器，由模型生成回答后发回给您。每次交互都有一个交互编号（在回答的 AI-Interaction-Id 信息中，也显示在网页提示里），并记录在防篡改的日志中。生成的文字和图片都带有人工智能生成标识。这个演示模型不会从您的对话中学习。"
mechanism.en = "The words you type are sent over the network to our server, where the model produces an answer and sends it back. Each interaction gets an interaction number (in the AI-Interaction-Id of the reply, and shown in the notice on web pages) and is recorded in a tamper-evident log. Generated text and pictures carry a label saying AI made them. This demonstration model does not learn from your conversations."

# Users' rights (使用者享有的权利).
user_rights.zh = "您有权知道自己正在与人工智能交互；有权了解本服务的基本原理、目的和主要运行机制；当回答对您的权益有重大影响时，有权要求我们解释作出回答的过程和方式，并对不合理的解释提出投诉；有权投诉侵犯知识产权等问题；依照《个人信息保护法》，有权查阅、复制、更正和删除您的个人信息。"
user_rights.en = "You have the right to know that you are interacting with AI, and to learn the basic principles, purpose and main workings of this service. Where an answer significantly affects your rights and interests, you may ask us to explain how it was reached, and complain if the explanation is unreasonable. You may complain about infringements of intellectual property and other problems. Under the Personal Information Protection Law you may see, copy, correct and delete your personal information."

# Remedies (救济渠道): where to ask and complain. The endpoint paths are also listed automatically.
remedies.zh = "要求解释：在 /ai/explanations 提交请求，写上那次回答的交互编号。投诉（包括对解释不满意、侵犯知识产权或其他问题）：在 /ai/complaints 提交。我们会及时答复。您也可以发电子邮件联系我们（地址见本页的联系方式），或者依法向有关主管部门投诉、举报。"
remedies.en = "To ask for an explanation, send a request to /ai/explanations with the interaction number of the answer. To complain (about an explanation, an intellectual property infringement or anything else), use /ai/complaints. We will reply promptly. You can also e-mail us (see the contact on this page), or complain or report to the competent authorities as the law provides."

# Intellectual property (Art. 70): tell users not to infringe, and how infringement is handled.
ip_notice.zh = "请尊重他人的知识产权。不得利用本服务侵犯他人的著作权、商标权、专利权等知识产权，例如要求它照抄他人的作品，或把生成的内容用于侵权。我们发现侵权行为时，会依法依约采取警示、限制功能、暂停或终止服务等措施。如果您认为本服务生成的内容侵犯了您的知识产权，请在 /ai/complaints 投诉。"
ip_notice.en = "Please respect other people's intellectual property. Do not use this service to infringe anyone's copyright, trademarks, patents or other intellectual property, for example by asking it to copy someone's work or by using what it generates to infringe. If we find infringement, we will warn, restrict features, or suspend or end the service, as the law and our terms allow. If you believe content generated here infringes your intellectual property, complain at /ai/complaints."

# Optional. Default: explicit and implicit labels per GB 45438-2025, C2PA and a watermark.
# labelling.zh = "…"
# labelling.en = "…"
# Optional. Default: built from [ledger.retention] (interaction logs kept at least six months).
# data_retention.zh = "…"
# data_retention.en = "…"

[security]
# /.well-known/security.txt (RFC 9116), where people report vulnerabilities (Art. 35).
# contact defaults to "mailto:" + [provider] contact; list several URIs, most preferred first.
# contact = ["mailto:security@example.com", "https://example.com/security"]
# expires defaults to 180 days after each request; if you set it, use a future RFC 3339 time.
# expires = 2026-12-31T00:00:00Z
preferred_languages = "zh, en"
# policy = "https://example.com/security-policy"
# acknowledgments = "https://example.com/security-thanks"
# canonical = "https://example.com/.well-known/security.txt"

[disclosure]
# AI-Disclosure header mode (draft-abaris-aicdh): none, ai-modified, ai-originated, machine-generated.
mode = "ai-originated"
# "," writes mode=ai-originated, provider="…"; ";" writes the draft's example form mode=…; provider="…".
header_form = ","
# The default language of notices and pages: "zh" or "en".
language = "zh"
# The cookie that remembers that a user has seen the first-contact notice.
cookie_name = "aiob_subject"
# Custom notices (each must say 人工智能 / AI). The short one stays under 160 characters. In the
# first-contact one, the word transparency_url in curly braces is replaced by the page's address.
# notice.zh = "您正在与人工智能交互，回答可能有误。"
# notice.en = "You are talking to an AI. Its answers may be wrong."
# first_contact_notice.zh = "…"
# first_contact_notice.en = "…"
'''
"""The three sections as commented TOML, ready to paste into ``aiobligations.toml``.

It has no curly braces, so it can be pasted into a template that goes through ``str.format``.
"""
